"""Random key/value streams with SmolLM2-135M's shapes, fed to a `KVWindowCache` the way a model feeds it.

- `smollm2_135m_config()`: the shapes (30 layers, 9 query heads, 3 KV heads, head_dim 64).
- `RandomStream`: random keys, values and queries; `append` runs one forward pass of n tokens through
  every layer of the cache (`update`, then `observe`).

Used by bench_kv.py (kv_timing.py, kv_memory.py). Deliberately not here: a model, timing, results.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig

from streamer.kv_window import KVWindowCache
from streamer.shared_types import Modality


def smollm2_135m_config() -> LlamaConfig:
    """SmolLM2-135M's shapes; max_position_embeddings raised to 16384 so budgets up to 8192 are allowed."""
    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=16384,
        rope_theta=100000.0,
    )


class RandomStream:
    """Appends random KV chunks the way a model does: for each layer `update`, then `observe`.

    Keys/values are (1, kv_heads, n, head_dim), queries (1, q_heads, n, head_dim), float32.
    """

    def __init__(self, cache: KVWindowCache, config: LlamaConfig, seed: int = 0):
        self.cache = cache
        self.kv_heads = config.num_key_value_heads
        self.q_heads = config.num_attention_heads
        self.dim = config.head_dim
        self.scaling = self.dim**-0.5
        self.gen = torch.Generator().manual_seed(seed)

    def kv(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.randn(1, self.kv_heads, n, self.dim, generator=self.gen)  # (B, H, T, D)
        v = torch.randn(1, self.kv_heads, n, self.dim, generator=self.gen)  # (B, H, T, D)
        return k, v

    def query(self, n: int) -> torch.Tensor:
        return torch.randn(1, self.q_heads, n, self.dim, generator=self.gen)  # (B, Hq, Q, D)

    def append(self, n: int, modality: Modality, video_time: float | None) -> None:
        """One forward pass of n tokens through every layer of the cache."""
        times = None if video_time is None else torch.full((n,), video_time)
        self.cache.tag(torch.full((n,), int(modality)), times)
        for layer_idx, layer in enumerate(self.cache.layers):
            k, v = self.kv(n)
            self.cache.update(k, v, layer_idx)
            layer.observe(self.query(min(n, self.cache.cfg.obs_window)), self.scaling)
