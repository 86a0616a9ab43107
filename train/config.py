"""Settings of one training run of `tiny` (`TrainConfig`), and how settings dataclasses become flags.

Every field of `TrainConfig` (and of `streamer.models.tiny.TinySettings`, the model sizes) whose type is
in `FLAG_TYPES` is a command-line flag of train_tiny.py: `a_steps` is `--a-steps`, `long_frames` is
`--long-frames 40,120`. Deliberately not here: the model sizes themselves (models/tiny.py), the training
(trainer.py) and the command line's other flags (train_tiny.py).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, dataclass, field, fields

import torch

from streamer.models.runtime import cpu_bf16_fast

def fast_bf16() -> bool:
    """bfloat16 autocast pays off on a GPU or a CPU with bfloat16 matrix units."""
    return torch.cuda.is_available() or cpu_bf16_fast()


BATCH_KINDS = {"f": "frame", "c": "clip", "l": "long", "s": "spliced", "p": "presence"}  # TrainConfig.schedule letters


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    seed: int = 0  # drives the world seeds, the initial weights and the batch order
    threads: int = 2  # torch CPU threads
    # stage A: vision tower + connector with auxiliary heads
    a_steps: int = 3500
    a_batch: int = 64
    a_lr: float = 2e-3
    a_on_resume: bool = False  # with --resume: run stage A on the resumed vision tower before stage B
    aux_words: bool = False  # auxiliary loss: connector slots 0-2 -> the word embeddings of the colour, shape and
    # digit on screen (" nothing" when empty), slots 3+ -> the <image> row, instead of heads on the mean
    # stage B: end to end through the frozen LM
    b_steps: int = 600
    schedule: str = "ffcffl"  # batch kinds in rotation: f = frames, c = short clips, l = one long clip, p = presence
    b_batch: int = 16  # single-frame examples per frame batch
    frame_questions: int = 1  # questions per frame, asked one after the other (a chat when > 1)
    clip_batch: int = 4  # clips per clip batch
    clip_frames: tuple[int, int] = (4, 14)
    clip_questions: int = 1
    long_frames: tuple[int, int] = (40, 120)  # frames of a long clip, with 1 to long_events events of 2-4 s
    long_events: int = 2  # most events in a long clip (at most 5: colours and digits differ)
    long_questions: int = 1  # questions about one long clip, asked one after the other
    presence_batch: int = 8  # clips per presence batch, one yes/no presence question each (stage P)
    presence_frames: tuple[int, int] = (4, 12)
    presence_questions: int = 3  # presence questions per clip, asked one after the other
    kind_weights: str = ""  # e.g. "when=8,after=2": draw weights of video question templates, each replacing
    # its weight in train.data.CLIP_KIND_WEIGHTS (templates named nowhere weigh 1)
    splice_branches: int = 12  # spliced batches: event sets spliced into one background video of long_frames[1] frames
    b_lr_vision: float = 3e-4
    b_lr_adapt: float = 1e-3  # LoRA factors and new token rows
    warmup: int = 20
    b_start: int = 0  # first stage-B step (with --resume: continue a run from its checkpoint at this step)
    b_aux_batch: int = 48  # frames per step for the stage-A auxiliary loss kept on during stage B (0: off)
    b_aux_weight: float = 1.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    bf16: bool = field(default_factory=fast_bf16)  # autocast the LM to bfloat16: default on GPUs and on CPUs with
    # AVX512-BF16/AMX (2.5x faster than float32 there), off on other CPUs (100x slower there)
    max_minutes: float = 57.0  # stage B stops early (and says so) past this wall time since the start
    save_every: int = 50
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("threads", "a_batch", "b_batch", "clip_batch", "splice_branches", "lora_rank", "save_every", "log_every", "long_events",
                     "frame_questions", "clip_questions", "long_questions", "presence_batch", "presence_questions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.schedule or set(self.schedule) - set(BATCH_KINDS):
            raise ValueError(f"schedule must be a non-empty string of {sorted(BATCH_KINDS)}, got {self.schedule!r}")
        for name in ("a_steps", "b_steps", "warmup", "b_aux_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.long_events > 5:
            raise ValueError(f"long_events must be at most 5 (distinct colours), got {self.long_events}")
        for name, low in (("clip_frames", 1), ("long_frames", 10)):
            lo, hi = getattr(self, name)
            if not low <= lo <= hi <= 300:
                raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= 300, got {(lo, hi)}")
        if not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes!r}")
        self.kind_weight_overrides()

    def kind_weight_overrides(self) -> dict[str, float]:
        """kind_weights as {template: weight}; ValueError unless it is "name=number,..." with numbers >= 0."""
        out = {}
        for item in filter(None, self.kind_weights.split(",")):
            name, _, value = (part.strip() for part in item.partition("="))
            try:
                out[name] = float(value)
            except ValueError:
                out[name] = math.nan  # fails the check below
            if not name or not 0 <= out[name] < math.inf:
                raise ValueError(f"kind_weights must look like 'when=8,after=2' with finite weights >= 0, got {self.kind_weights!r}")
        return out


# how a setting's annotation is parsed from the command line; settings of other types are not flags
FLAG_TYPES = {
    "int": int, "float": float, "str": str, "bool": lambda s: s.lower() in ("1", "true", "yes"),
    "tuple[int, int]": lambda s: tuple(int(x) for x in s.split(",")),  # "40,120"
    "tuple[str, ...]": lambda s: tuple(s.split(",")),  # "q_proj,v_proj"
}  # fmt: skip


def add_flags(parser: argparse.ArgumentParser, *settings: type) -> None:
    """One flag per field of the `settings` dataclasses whose annotation is in FLAG_TYPES, default the
    field's default: --a-steps, --patch-size, ..."""
    for cls in settings:
        for f in fields(cls):
            kind = FLAG_TYPES.get(f.type)
            if kind is not None:
                default = f.default_factory() if f.default is MISSING else f.default
                parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default)


def from_flags(cls: type, args: argparse.Namespace):
    """An instance of the settings dataclass `cls` from parsed flags (fields without a flag keep their default)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})
