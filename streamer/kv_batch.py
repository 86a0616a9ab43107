"""Several sessions' caches in one forward pass: the model's weights are read once for all of them.

Every bounded cache has the same shape of problem (a fixed budget), but not the same length, positions or
policy, so the caches are not stacked: `BatchCache` hands each session's own `KVWindowCache` its row of
the batch's new keys and values (`update`), and the `kv_window` attention (`window_attention`) runs
each row against its own cache, with its own causal mask, scoring and cut, exactly as a pass of that
session alone would. The linear layers, which hold nearly all of a small model's time at a few tokens a
pass, run once over the batch.

Positions: each row gets its own (`position_ids` (B, T) from its cache's `next_position()`), so a row's
keys, queries and masks are those of its session alone. 1-D RoPE models only (M-RoPE models run alone).
Every row of a pass has the same number of new tokens (decoding steps: one each).

Deliberately not here: when to batch (`streamer.batching`), what a session does with the logits.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from streamer.errors import ConfigError
from streamer.kv_attention import Rows, _observer
from streamer.kv_window import KVWindowCache


class BatchCache(Cache):
    """`caches[b]` takes row b of every forward pass run with this as `past_key_values`."""

    def __init__(self, caches: list[KVWindowCache]):
        if not caches or any(c.mrope for c in caches):
            raise ConfigError("a batch needs at least one cache, and 1-D RoPE models (not M-RoPE)")
        self.caches = caches
        super().__init__(layers=list(caches[0].layers))  # mask sizes of row 0: the attention makes each row's own

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        keys, values, observed = [], [], []
        for b, cache in enumerate(self.caches):
            k, v = cache.update(key_states[b:b + 1], value_states[b:b + 1], layer_idx)
            keys.append(k)
            values.append(v)
            observed.append(_observer.layer)
            _observer.layer = None
        return Rows(keys, observed), Rows(values, observed)

    def compress(self) -> None:
        for cache in self.caches:
            cache.compress()


@torch.no_grad()
def batched_pass(model, caches: list[KVWindowCache], input_ids: torch.Tensor) -> torch.Tensor:
    """input_ids (B, T), row b appended to `caches[b]`; returns the last position's logits (B, V), float32."""
    for cache in caches:  # text, like a session's own decoding step (cut to the budget, not below it)
        cache.tag(torch.zeros(input_ids.shape[1]))
    if len(caches) == 1:  # alone: the session's own pass, without the rows' bookkeeping
        out = model(input_ids=input_ids.to(model.device), past_key_values=caches[0], use_cache=True, logits_to_keep=1)
        caches[0].compress()
        return out.logits[:, -1].float()
    t = input_ids.shape[1]
    positions = torch.stack([torch.arange(c.next_position(), c.next_position() + t) for c in caches])
    batch = BatchCache(caches)
    out = model(input_ids=input_ids.to(model.device), position_ids=positions.to(model.device), past_key_values=batch,
                use_cache=True, logits_to_keep=1)
    batch.compress()
    return out.logits[:, -1].float()
