"""Frames to normalised pixel arrays with PIL: the resize + rescale + normalise step that the official
video processors do with torchvision, which this project does not depend on.

Each family adapter passes its checkpoint's image-processor values (size, resampling filter, rescale
factor, mean, std), so the numbers are the checkpoint's; only the resize kernel is PIL's instead of
torchvision's (differences of a few 1e-3 at edges, see tests/test_parity.py).

Deliberately not here: how a family lays pixels out for its vision tower (tiles, temporal patches).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def normalised_frames(images: list[np.ndarray], size_hw: tuple[int, int], processor) -> np.ndarray:
    """(n, 3, H, W) float32: each (h, w, 3) uint8 RGB frame resized to `size_hw` with the resampling
    filter of `processor` (the checkpoint's image processor; bicubic if it names none), times its
    rescale factor, minus its mean, over its std (per channel)."""
    h, w = size_hw
    rescale = float(getattr(processor, "rescale_factor", None) or 1 / 255)
    mean = np.asarray(processor.image_mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(processor.image_std, dtype=np.float32).reshape(3, 1, 1)
    filt = Image.Resampling(int(getattr(processor, "resample", None) or Image.Resampling.BICUBIC))
    frames = []
    for image in images:
        if image.shape[:2] != (h, w):
            image = np.asarray(Image.fromarray(image).resize((w, h), filt))
        chw = image.astype(np.float32).transpose(2, 0, 1) * np.float32(rescale)  # (3, H, W)
        frames.append((chw - mean) / std)
    return np.stack(frames)  # (n, 3, H, W)
