"""The ChatML turn layout shared by the families whose language model is Qwen2 (LLaVA-OneVision,
Qwen2.5-VL, Qwen3-VL): `<|im_start|>role\\n ... <|im_end|>\\n`, an optional system turn first, the answer
after `<|im_start|>assistant\\n`, `<|im_end|>` ending it.

Deliberately not here: how a family lays out its frames or pixels (one file per family).
"""

from __future__ import annotations

from typing import Sequence

from streamer.models.base import ModelAdapter

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


class ChatMLAdapter(ModelAdapter):
    """Base of the ChatML families: the turn texts and end-of-turn id; subclasses add frames and pixels."""

    def __init__(self, name: str, model, tokenizer, image_processor, *, is_random: bool, system_prompt: str | None,
                 needed: Sequence[str], config_ids: dict[str, str]) -> None:
        """`needed`, `config_ids`: the family's own tokens, checked with the chat tokens (`_check_tokens`)."""
        super().__init__(name, model, tokenizer, image_processor, is_random=is_random)
        self.system_prompt = system_prompt  # None: no system turn
        self.eos_token_ids = self._eos_ids_with(self._check_tokens((IM_START, IM_END, *needed), config_ids)[IM_END])

    def _opening_text(self) -> str:
        return f"{IM_START}system\n{self.system_prompt}{IM_END}\n" if self.system_prompt else ""

    def _user_open_text(self) -> str:
        return f"{IM_START}user\n"

    def _question_text(self, question: str, after_frames: bool) -> tuple[str, str]:
        return question, f"{IM_END}\n{IM_START}assistant\n"

    def _assistant_end_text(self) -> str:
        return f"{IM_END}\n"
