"""Low-rank adapters (LoRA) on the frozen language model's projections, trained with `tiny`.

`add_lora` wraps the projections of every layer, `lora_factors` gives the factors as the checkpoint
stores them (already scaled: `streamer.models.tiny` merges them as W += B @ A when it assembles the
model) and `load_lora_factors` puts stored factors back, to resume a run. Deliberately not here: which
parameters train when and at which learning rate (trainer.py), merging at load time (models/tiny.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from streamer.models.tiny import LORA_PREFIX


class LoRALinear(nn.Module):
    """y = base(x) + scale * x A^T B^T, with A (r, in) random and B (out, r) zero at the start."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.t().to(x.dtype)) @ self.B.t().to(x.dtype) * self.scale


def add_lora(text_model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> dict[str, LoRALinear]:
    """Wrap the `targets` projections (e.g. "q_proj") of every layer's attention; returns {weight key in the
    SmolVLM model: module}."""
    wrapped = {}
    for i, layer in enumerate(text_model.layers):
        for name in targets:
            base = getattr(layer.self_attn, name)
            module = LoRALinear(base, rank, alpha)
            setattr(layer.self_attn, name, module)
            wrapped[f"model.text_model.layers.{i}.self_attn.{name}.weight"] = module
    return wrapped


def lora_factors(wrapped: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """{"lora.<weight key>.A": scale * A, "...B": B}: what models.tiny merges as W += B @ A."""
    out = {}
    for key, m in wrapped.items():
        out[f"{LORA_PREFIX}{key}.A"] = m.A.detach() * m.scale
        out[f"{LORA_PREFIX}{key}.B"] = m.B.detach()
    return out


def load_lora_factors(wrapped: dict[str, LoRALinear], state: dict[str, torch.Tensor]) -> None:
    """Inverse of `lora_factors`: copy the factors in `state` into the modules; a module whose weight has
    no factors in `state` keeps its initial ones (B = 0: no change to the weight)."""
    with torch.no_grad():
        for key, m in wrapped.items():
            if f"{LORA_PREFIX}{key}.A" not in state:
                continue
            m.A.copy_(state[f"{LORA_PREFIX}{key}.A"] / m.scale)
            m.B.copy_(state[f"{LORA_PREFIX}{key}.B"])
