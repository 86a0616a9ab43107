"""Frame sampler (placeholder: being written). Types shared with the model adapters."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One sampled frame."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    time_s: float  # presentation time in seconds from the start of the source


@dataclass(frozen=True)
class Chunk:
    """A group of consecutive sampled frames, fed to the model in one forward pass."""

    frames: tuple[Frame, ...]
    index: int = 0  # 0-based chunk number within the stream

    @property
    def times(self) -> list[float]:
        return [f.time_s for f in self.frames]
