"""Where and in which precision a model runs: validated load settings and their resolution.

`LoadSettings` checks what a user typed (`--model`, `--device`, `--dtype`, `--speed`) and raises ConfigError
with a clear message; `resolve_device` / `resolve_dtype` turn "not given" into the machine's defaults
(CUDA when available, else CPU; float32 on CPU, bfloat16 on CUDA when supported, else float16).

`--speed int8` (`make_fast`): the linear layers of the vision tower and its projector run in int8 with dynamic
activation scales (`torch.ao` dynamic quantization); the language model stays float32. Numbers (speed per frame,
image features' cosine and the first answer token's KL against float32) are in BENCHMARKS section 16. Opt-in:
answers move a little, and it runs on the CPU in float32 only.

Deliberately not here: loading anything (registry.py does that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from streamer.errors import ConfigError
from streamer.shared_types import SPEEDS

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class LoadSettings:
    """What to load and where; validated on construction."""

    name_or_path: str  # built-in name, hub id (owner/name) or local checkpoint directory
    device: str | torch.device | None = None  # None: cuda if available, else cpu
    dtype: str | torch.dtype | None = None  # None: float32 on cpu, bfloat16/float16 on cuda; else one of DTYPES
    speed: str = "exact"  # one of SPEEDS

    def __post_init__(self) -> None:
        if not isinstance(self.name_or_path, str) or not self.name_or_path.strip():
            raise ConfigError("model name is empty: pass --model NAME_OR_PATH")
        self.name_or_path = self.name_or_path.strip()
        self.device = resolve_device(self.device)
        self.dtype = resolve_dtype(self.dtype, self.device)
        if self.speed not in SPEEDS:
            raise ConfigError(f"unknown speed {self.speed!r}: use one of {', '.join(SPEEDS)}")
        if self.speed == "int8" and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise ConfigError(f"--speed int8 runs on the CPU in float32, not on {self.device} in "
                              f"{str(self.dtype).removeprefix('torch.')}: use --speed exact there")


LANGUAGE_MODELS = ("text_model", "language_model")  # what `make_fast` leaves in float32, by family


def make_fast(model: torch.nn.Module) -> None:
    """`--speed int8`: the linear layers of the vision tower and its projector (every part of `model.model` but the
    language model) become int8 with dynamic activation scales. The language model stays float32: in int8 it moved
    the trained `tiny`'s first answer token by 0.10-0.15 nats (the budget is 0.01), the vision tower by under 0.001."""
    import warnings

    with warnings.catch_warnings():  # torch.ao's notice that this API moves to torchao
        warnings.simplefilter("ignore")
        for name, part in model.model.named_children():
            if name not in LANGUAGE_MODELS:
                torch.ao.quantization.quantize_dynamic(part, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` -> cuda if available else cpu; an explicit device must exist on this machine."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r} requested but MPS is not available here: use --device cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`None` -> float32 on CPU, bfloat16 (or float16 without bf16 support) on GPUs."""
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ConfigError(f"unsupported dtype {dtype}: use one of {', '.join(DTYPES)}")
        resolved = dtype
    else:
        key = str(dtype).strip().lower().removeprefix("torch.")
        if key not in DTYPES:
            raise ConfigError(f"unsupported dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        resolved = DTYPES[key]
    if device.type == "cpu" and resolved == torch.float16:
        logger.warning("float16 on CPU is slow and some ops lack kernels; bfloat16 or float32 is better there")
    if device.type == "cpu" and resolved == torch.bfloat16 and not cpu_bf16_fast():
        logger.warning("this CPU has no bfloat16 matrix units (AVX512-BF16/AMX): bfloat16 runs many times slower "
                       "than float32 here (about 100x on an AVX2 EPYC); use float32")
    return resolved


def cpu_bf16_fast() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (oneDNN's check for AVX512-BF16 or AMX). Without
    it bfloat16 matmuls take a slow reference path: 1.5 s against 13 ms in float32 for (1024x576)@(576x1536)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False
