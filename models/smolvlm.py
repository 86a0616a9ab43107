"""Adapter for SmolVLM / SmolVLM2 (the Idefics3 family): video frames as timestamped global images.

Prompt layout (what `SmolVLMProcessor` writes for a video; N = tokens_per_frame, 64 for SmolVLM2-256M):

    <|im_start|>User: <intro line: see below>
    Frame from 00:01:<fake_token_around_image><global-img><image>*N<fake_token_around_image>
    Frame from 00:02:<fake_token_around_image><global-img><image>*N<fake_token_around_image>
    <blank line>What is happening?<end_of_utterance>
    Assistant: <answer><end_of_utterance>
    User: 
    Frame from 00:03:...

Frame times are "MM:SS" with unbounded minutes ("75:30" at 1:15:30), as the processor writes them.
What streaming changes, and why (tests/test_parity.py asserts exactly this): the official video opens
with "You are provided the following series of {N in words} frames from a {H:MM:SS} [H:MM:SS] video.\n";
a stream knows neither its frame count nor its duration when it starts, so that line is left out and
nothing else changes. The built-in `tiny` was trained on this project's own layout ("User:" without
the space before frames, and each frame as "Frame" + image block + " at HH:MM:SS."): `official_prompt =
False` and its own `_frame_text` in models/tiny.py.

Each frame is one global image (no splitting into tiles), resized to the vision tower's square input
size, so every frame costs the same number of tokens. The prompt text is written here and tokenized
in one go; the image processor (the PIL one when torchvision is missing) only makes pixel tensors.
We do not use `AutoProcessor`: SmolVLM's processor needs the optional `num2words` package and would
re-expand the placeholders we already expanded.

Deliberately not here: loading by name (registry.py) and the tiny random model (tiny_random.py).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import torch

from streamer.models.base import ModelAdapter
from streamer.shared_types import Segment, format_timestamp
from streamer.video.frame import Frame

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"  # boundary around each image
GLOBAL_IMAGE_TOKEN = "<global-img>"  # marks the whole-image (not tile) view
END_OF_UTTERANCE = "<end_of_utterance>"
SPECIAL_TOKENS = (FAKE_IMAGE_TOKEN, IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN, END_OF_UTTERANCE)

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"


class SmolVLMAdapter(ModelAdapter):
    """SmolVLM / SmolVLM2 / Idefics3-architecture models."""

    family = "smolvlm"
    official_prompt: ClassVar[bool] = True  # False: no space between "User:" and the frames (`tiny`, see the module docstring)

    def __init__(self, name: str, model, tokenizer, image_processor, *, is_random: bool = False) -> None:
        super().__init__(name, model, tokenizer, image_processor, is_random=is_random)
        config = model.config
        vocab = self._check_tokens(SPECIAL_TOKENS, {IMAGE_TOKEN: "image_token_id"})
        self.image_token_id = int(config.image_token_id)
        self.other_token_ids = (vocab[FAKE_IMAGE_TOKEN], vocab[GLOBAL_IMAGE_TOKEN])
        self.eos_token_ids = self._eos_ids_with(vocab[END_OF_UTTERANCE])
        vision = config.vision_config
        self.frame_size = int(vision.image_size)  # px, square input of the vision tower
        side = self.frame_size // int(vision.patch_size)
        self.tokens_per_frame = side * side // (int(config.scale_factor) ** 2)
        self._image_block = (
            FAKE_IMAGE_TOKEN + GLOBAL_IMAGE_TOKEN + IMAGE_TOKEN * self.tokens_per_frame + FAKE_IMAGE_TOKEN
        )

    # ----------------------------------------------------------------- family hooks

    def _opening_text(self) -> str:
        return "<|im_start|>"

    def _user_open_text(self) -> str:
        return "User:"

    def _frame_text(self, frame: Frame) -> str:
        return f"\nFrame from {format_timestamp(frame.time_s, hours=False)}:" + self._image_block

    def _frame_segments(self, frames, opens_turn: bool) -> list[Segment]:
        segments = super()._frame_segments(frames, opens_turn)
        if opens_turn and self.official_prompt:  # "User: " + video: the template's space, then the frames
            segments.insert(0, Segment(" ", segments[0].time_s))
        return segments

    def _question_text(self, question: str, after_frames: bool) -> tuple[str, str]:
        sep = "\n\n" if after_frames else " "
        return f"{sep}{question}", f"{END_OF_UTTERANCE}\nAssistant:"

    def _assistant_end_text(self) -> str:
        return f"{END_OF_UTTERANCE}\n"

    def _pixel_inputs(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        size = {"longest_edge": self.frame_size}
        out = self.image_processor(
            images=[images],
            do_image_splitting=False,
            size=size,
            max_image_size=size,
            input_data_format="channels_last",
            return_tensors="pt",
        )
        pixel_values = out["pixel_values"]  # (1, n_frames, 3, S, S)
        inputs = {"pixel_values": pixel_values}
        if "pixel_attention_mask" in out:
            inputs["pixel_attention_mask"] = out["pixel_attention_mask"].bool()  # (1, n_frames, S, S)
        return inputs

