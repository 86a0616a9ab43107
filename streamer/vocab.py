"""The small vocabulary that the session, the cache and the model adapters share.

What a cached token is (`Modality`), where a chat stands (`Phase`, `Conversation`), one model step's
input with its per-token tags (`Prompt`, built from `Segment`s) and the one video-time format of the
prompts (`format_timestamp`). Both sides import this module; it imports nothing of the project.

Deliberately not here: tokenizing (`streamer.models.prompt`), chat templates (each family adapter),
cache policy (`kv_window.py`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch


class Modality(enum.IntEnum):
    """What a cached token came from; the caller tags each appended token with one."""

    TEXT = 0
    IMAGE = 1
    OTHER = 2  # e.g. image-boundary / special tokens around frames


class Phase(enum.Enum):
    """Which part of the conversation the next prompt continues."""

    NONE = "none"  # nothing fed yet: the next prompt starts with the opening
    USER = "user"  # a user turn is open (frames and/or nothing else yet)
    ASSISTANT = "assistant"  # a generation prefix was fed; the answer is being / has been generated
    CLOSED = "closed"  # the assistant turn was closed by answer_end(): the next prompt opens a user turn


@dataclass(frozen=True)
class Conversation:
    """Where one stream's chat stands. The session owns it (one adapter serves many sessions) and
    moves to `prompt.after` once it has fed that prompt to the model; a prompt it refuses changes nothing."""

    phase: Phase = Phase.NONE
    has_frames: bool = False  # the open user turn already holds frames


@dataclass
class Prompt:
    """One model step's input with per-token bookkeeping (batch size 1)."""

    inputs: dict[str, torch.Tensor]  # forward kwargs: input_ids (1, T) and pixel tensors when frames are present
    modality: torch.Tensor  # (T,) int8 Modality of each token
    times: torch.Tensor  # (T,) float32 video time (s) of the frame each token belongs to; NaN for plain text
    after: Conversation = Conversation()  # the conversation once this prompt has been fed

    def __post_init__(self) -> None:
        n = self.n_tokens
        if self.modality.shape != (n,) or self.times.shape != (n,):
            raise ValueError(
                f"modality {tuple(self.modality.shape)} and times {tuple(self.times.shape)} must be ({n},)"
            )

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]  # (1, T)

    @property
    def n_tokens(self) -> int:
        return int(self.inputs["input_ids"].shape[-1])


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text and the video time it belongs to (NaN: not part of a frame)."""

    text: str
    time_s: float = math.nan
    literal: bool = False  # user text: special-token strings in it (e.g. "<image>") stay plain text


def format_timestamp(time_s: float) -> str:
    """Video time as "HH:MM:SS" (floored to the second), e.g. 751.4 -> "00:12:31"."""
    if not math.isfinite(time_s) or time_s < 0:
        raise ValueError(f"frame time must be a finite number >= 0, got {time_s!r}")
    total = int(time_s)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
