"""Adapter for LLaVA-OneVision (SigLIP vision tower + Qwen2 LM): each frame as a one-frame video.

Prompt layout (Qwen chat template; N = tokens_per_frame = ceil(P/2)^2 + 1 with P = image_size //
patch_size, i.e. 14*14 + 1 = 197 for the released 384 px / patch 14 checkpoints):

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    Frame at 00:00:01:<video>*N
    Frame at 00:00:02:<video>*N
    What is happening?<|im_end|>
    <|im_start|>assistant
    <answer><|im_end|>
    <|im_start|>user
    Frame at 00:00:03:...

Why video placeholders and not `<image>`: LLaVA-OneVision encodes video frames through its video
path (vision features pooled 2x2, then one learned newline vector), which is what the model saw for
video in training and costs 197 tokens per frame. As `<image>` a frame costs 730 tokens (several
images in one prompt) or 1485 (a lone image, "anyres" tiling), so the count would even depend on how
many frames a chunk holds. Sending every frame as its own one-frame video keeps a fixed count and
lets each frame carry its own timestamp. All N tokens (features and the trailing newline vector) use
the `<video>` id and are tagged IMAGE.

Frames are resized to the vision tower's square input size and normalised as
`LlavaOnevisionVideoProcessor` does; that class needs torchvision, so this file does it with PIL,
using the resampling, mean and std of the checkpoint's image processor (the same values).

Deliberately not here: loading by name (registry.py), anyres image inputs.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from PIL import Image

from streamer.models.base import ModelAdapter
from streamer.vocab import format_timestamp
from streamer.errors import ModelLoadError
from streamer.sources import Frame

logger = logging.getLogger(__name__)

VIDEO_TOKEN = "<video>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


class LlavaOnevisionAdapter(ModelAdapter):
    """LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`) models."""

    family = "llava_onevision"

    def __init__(
        self,
        name: str,
        model,
        tokenizer,
        image_processor,
        *,
        is_random: bool = False,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        super().__init__(name, model, tokenizer, is_random=is_random)
        self.image_processor = image_processor
        self.system_prompt = system_prompt
        config = model.config
        vocab = tokenizer.get_vocab()
        video_id = int(config.video_token_index)
        if vocab.get(VIDEO_TOKEN) != video_id:
            raise ModelLoadError(
                f"model {name!r}: tokenizer {VIDEO_TOKEN} id {vocab.get(VIDEO_TOKEN)} != config video_token_index "
                f"{video_id}"
            )
        if "<|im_end|>" not in vocab or "<|im_start|>" not in vocab:
            raise ModelLoadError(f"model {name!r}: tokenizer lacks the Qwen chat tokens <|im_start|>/<|im_end|>")
        if config.vision_feature_select_strategy != "full":
            raise ModelLoadError(
                f"model {name!r}: vision_feature_select_strategy={config.vision_feature_select_strategy!r} "
                "is not supported (video frames need 'full')"
            )
        self._video_token_id = video_id
        self._im_end_id = vocab["<|im_end|>"]
        vision = config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        self._tokens_per_frame = math.ceil(side / 2) ** 2 + 1  # pooled grid + one newline vector
        self.frame_size = int(vision.image_size)  # px, square input of the vision tower (pooling assumes it)
        self._mean = np.asarray(image_processor.image_mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(image_processor.image_std, dtype=np.float32).reshape(3, 1, 1)
        self._resample = Image.Resampling(int(getattr(image_processor, "resample", Image.Resampling.BICUBIC)))
        self._rescale = float(getattr(image_processor, "rescale_factor", 1 / 255))

    # ----------------------------------------------------------------- family hooks

    @property
    def image_token_id(self) -> int:
        return self._video_token_id

    @property
    def tokens_per_frame(self) -> int:
        return self._tokens_per_frame

    @property
    def eos_token_ids(self) -> list[int]:
        return self._eos_ids_with(self._im_end_id)

    def _opening_text(self) -> str:
        return f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n"

    def _user_open_text(self) -> str:
        return "<|im_start|>user\n"

    def _frame_text(self, frame: Frame) -> str:
        return f"Frame at {format_timestamp(frame.time_s)}:" + VIDEO_TOKEN * self._tokens_per_frame + "\n"

    def _question_text(self, question: str, after_frames: bool) -> tuple[str, str]:
        return question, "<|im_end|>\n<|im_start|>assistant\n"

    def _assistant_end_text(self) -> str:
        return "<|im_end|>\n"

    def _pixel_inputs(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        h = w = self.frame_size
        frames = []
        for image in images:
            resized = np.asarray(Image.fromarray(image).resize((w, h), self._resample), dtype=np.float32)  # (H, W, 3)
            chw = resized.transpose(2, 0, 1) * self._rescale  # (3, H, W)
            frames.append((chw - self._mean) / self._std)
        pixel_values = torch.from_numpy(np.stack(frames))  # (n_frames, 3, H, W)
        return {"pixel_values_videos": pixel_values.unsqueeze(1)}  # (n_frames, 1, 3, H, W): one video per frame

