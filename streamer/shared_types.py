"""The types that the session, the cache and the model adapters share.

What a cached token is (`Modality`), where a chat stands (`Phase`, `Conversation`, `Turn`), one model step's
input with its per-token tags (`Prompt`, built from `Segment`s; `MRopeLayout` for 3-D positions) and the
one video-time format of the prompts (`format_timestamp`), and what the session and the UI use of a model
adapter (`Adapter`). Both sides import this module; it imports nothing of the project.

Deliberately not here: tokenizing (`streamer.models.prompt`), chat templates (each family adapter),
cache policy (`kv_window.py`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from streamer.video.frame import Chunk, Frame


SPEEDS = ("exact", "int8")  # --speed: the model as loaded, or its linear layers in int8 on the CPU (`make_fast`)


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


@dataclass
class Turn:
    """One question and its answer, with the video time it was asked at (and the answer's token ids)."""

    question: str
    answer: str
    video_time_s: float
    ids: list[int] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Conversation:
    """Where one stream's chat stands. The session owns it (one adapter serves many sessions) and
    moves to `prompt.after` once it has fed that prompt to the model; a prompt it refuses changes nothing."""

    phase: Phase = Phase.NONE
    has_frames: bool = False  # the open user turn already holds frames


@dataclass(frozen=True)
class MRopeLayout:
    """3-D (t, h, w) M-RoPE positions of one prompt's tokens, counted from 0 = where the prompt starts.

    The model lays a prompt out as position blocks: a text token is a block of 1 position (the same on
    all three axes); a video block's tokens share its start (`anchor`) and it takes `advance` positions.
    The cache adds its next position to all of it and moves whole blocks when it closes gaps.
    """

    position_ids: torch.Tensor  # (3, T) int64
    anchor: torch.Tensor  # (T,) int64 start of the block each token belongs to
    advance: torch.Tensor  # (T,) int64 positions that block takes

    def __post_init__(self) -> None:
        n = self.anchor.shape[0]
        if self.position_ids.shape != (3, n) or self.advance.shape != (n,):
            raise ValueError(
                f"position_ids {tuple(self.position_ids.shape)} and advance {tuple(self.advance.shape)} must be "
                f"(3, {n}) and ({n},)"
            )

    @classmethod
    def text(cls, n: int) -> "MRopeLayout":
        """n plain text tokens: positions 0..n-1 on every axis."""
        pos = torch.arange(n)
        return cls(pos.expand(3, n).clone(), pos, torch.ones(n, dtype=torch.int64))

    @property
    def length(self) -> int:
        """Positions the prompt takes: where the next prompt starts."""
        return int(self.anchor[-1] + self.advance[-1]) if self.anchor.numel() else 0


@dataclass
class PreparedChunk:
    """A chunk made ready for the language model ahead of time (`StreamSession.prepare`): the frame skip applied
    and the vision tower run, so that only the language model's pass is left for `StreamSession.ingest`."""

    chunk: Chunk  # the frames to feed (those the skip kept; maybe none)
    times: tuple[float, ...]  # the video times of all the chunk's frames, fed or skipped
    pixels: dict[str, Any] | None  # `Adapter.frame_inputs(chunk.frames, encode=True)`; None when no frame is left
    seconds: float  # what preparing it took

    @property
    def skipped(self) -> int:
        return len(self.times) - len(self.chunk.frames)


@dataclass
class Prompt:
    """One model step's input with per-token bookkeeping (batch size 1)."""

    # forward kwargs: input_ids (1, T) and, with frames, their pixel tensors or the vision tower's output on them
    # (`mm_encoder_outputs`, see `ModelAdapter.frame_inputs`)
    inputs: dict[str, Any]
    modality: torch.Tensor  # (T,) int8 Modality of each token
    times: torch.Tensor  # (T,) float32 video time (s) of the frame each token belongs to; NaN for plain text
    after: Conversation = Conversation()  # the conversation once this prompt has been fed
    mrope: MRopeLayout | None = None  # 3-D positions of a prompt with frames (M-RoPE models); None: text

    def __post_init__(self) -> None:
        n = self.n_tokens
        if self.modality.shape != (n,) or self.times.shape != (n,):
            raise ValueError(
                f"modality {tuple(self.modality.shape)} and times {tuple(self.times.shape)} must be ({n},)"
            )
        if self.mrope is not None and self.mrope.anchor.shape != (n,):
            raise ValueError(f"the M-RoPE layout has {self.mrope.anchor.shape[0]} tokens, the prompt {n}")

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


def format_timestamp(time_s: float, hours: bool = True) -> str:
    """Video time as "HH:MM:SS" (floored to the second), e.g. 751.4 -> "00:12:31"; with hours=False as
    "MM:SS" with the minutes unbounded ("12:31", 4000 s -> "66:40"), the way SmolVLM2 writes frame times."""
    if not math.isfinite(time_s) or time_s < 0:
        raise ValueError(f"frame time must be a finite number >= 0, got {time_s!r}")
    total = int(time_s)
    if not hours:
        return f"{total // 60:02d}:{total % 60:02d}"
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


@runtime_checkable
class Adapter(Protocol):
    """What the session and the UI use of a model adapter; `streamer.models.base.ModelAdapter` implements it."""

    name: str  # the built-in name, hub id or directory it was loaded from
    model: Any  # the transformers model the session runs, with the cache as past_key_values
    note: str | None  # what a user should know about its answers (random weights), or None
    eos_token_ids: list[int]  # tokens that end an answer

    def chunk_prompt(self, chunk: Chunk, conv: Conversation, pixels: dict[str, Any] | None = None) -> Prompt: ...

    def frame_inputs(self, frames: Sequence[Frame], encode: bool = False) -> dict[str, Any]: ...

    def question_prompt(self, question: str, conv: Conversation) -> Prompt: ...

    def answer_end(self, conv: Conversation) -> Prompt: ...

    def proxy_ids(self) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def describe(self) -> dict[str, Any]: ...
