"""Adapter for LLaVA-OneVision (SigLIP vision tower + Qwen2 LM): each chunk of frames as one video.

Prompt layout (Qwen chat template, as `LlavaOnevisionProcessor` writes a video; N = tokens_per_frame =
ceil(P/2)^2 with P = image_size // patch_size, i.e. 14*14 = 196 for the released 384 px / patch 14
checkpoints, n = frames in the chunk):

    <|im_start|>user
    <video>*(n*N + 1)
    <video>*(n*N + 1)
    What is happening?<|im_end|>
    <|im_start|>assistant
    <answer><|im_end|>
    <|im_start|>user
    <video>*...

The video path (vision features pooled 2x2, then one learned newline vector after the whole video) is
what the model saw for video in training; as `<image>` a frame would cost 730 or 1485 tokens. All the
tokens (features and the newline vector) use the `<video>` id and are tagged IMAGE, each frame's with
its time; the newline vector takes the chunk's last frame time. The official format writes no frame
times, so neither does this one.

What streaming changes, and why (tests/test_parity.py asserts exactly this): with one chunk before a
question the tokens and the pixel layout are the official ones. A stream of several chunks is several
videos, each closed by its newline vector and a "\n": a stream has no end at which to close one video
before a question can come, and a chunk is one vision-tower pass.

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

from streamer.models.chatml import ChatMLAdapter
from streamer.models.pixels import normalised_frames
from streamer.shared_types import Segment
from streamer.errors import ModelLoadError

logger = logging.getLogger(__name__)

VIDEO_TOKEN = "<video>"
DEFAULT_SYSTEM_PROMPT = None  # the llava-hf chat template writes no system turn unless the chat has one


class LlavaOnevisionAdapter(ChatMLAdapter):
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
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        super().__init__(name, model, tokenizer, image_processor, is_random=is_random, system_prompt=system_prompt,
                         needed=(), config_ids={VIDEO_TOKEN: "video_token_index"})
        config = model.config
        video_id = int(config.video_token_index)
        if config.vision_feature_select_strategy != "full":
            raise ModelLoadError(
                f"model {name!r}: vision_feature_select_strategy={config.vision_feature_select_strategy!r} "
                "is not supported (video frames need 'full')"
            )
        self.image_token_id = video_id
        vision = config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        self.tokens_per_frame = math.ceil(side / 2) ** 2  # pooled grid; + one newline vector per chunk
        self.frame_size = int(vision.image_size)  # px, square input of the vision tower (pooling assumes it)

    # ----------------------------------------------------------------- family hooks

    def _frame_segments(self, frames, opens_turn: bool) -> list[Segment]:
        """One video: each frame's pooled features at its time, then the newline vector and "\n"."""
        segments = [Segment(VIDEO_TOKEN * self.tokens_per_frame, float(f.time_s)) for f in frames]
        return segments + [Segment(VIDEO_TOKEN + "\n", float(frames[-1].time_s))]

    def _pixel_inputs(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        frames = normalised_frames(images, (self.frame_size, self.frame_size), self.image_processor)
        pixel_values = torch.from_numpy(frames)  # (n_frames, 3, H, W)
        return {"pixel_values_videos": pixel_values.unsqueeze(0)}  # (1, n_frames, 3, H, W): one video

