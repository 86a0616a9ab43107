"""The `kv_window` attention function: SDPA for the output, then the cache layer scores and compresses.

`KVWindowCache.update` hands the layer it just appended to through a per-thread slot (`_observer`);
`window_attention`, registered with transformers' `AttentionInterface` under `ATTN_IMPLEMENTATION`,
computes the usual SDPA output and then lets that layer score its tokens with this pass's queries
(`KVWindowLayer.observe`) and cut itself back to its budget before the next layer runs.
`use_window_attention(model)` switches a model to it. Any other module, and any call with no layer in
the slot (the vision tower, a plain `DynamicCache`), gets plain SDPA.

When the layer scores with the last `obs_window` queries (every scored policy, `obs_select="last"`, one
sequence), those rows of attention are computed here by hand and SDPA does the others: their softmax is
both their output (P V) and the scores, so scoring costs no second Q K^T and softmax (issue 18: it was
about a quarter of the compression time). The output equals SDPA's to float32 rounding.

Deliberately not here: the cache and its layers (`kv_window.py`, `kv_layer.py`), scoring math
(`kv_scoring.py`). No model class is patched; the function is registered, not monkeypatched in.
"""

import threading
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from streamer.kv_layer import KVWindowLayer
from streamer.kv_scoring import attention_probs
from streamer.rope import rotate

ATTN_IMPLEMENTATION = "kv_window"


class _Observer(threading.local):
    """The layer whose attention the next `kv_window` call should score (per thread)."""

    layer: KVWindowLayer | None = None


_observer = _Observer()


@dataclass
class Rows:
    """Keys or values of a batch of caches (`streamer.kv_batch.BatchCache`) for one layer: each row's whole
    cache and the row's layer to observe (None: that row's pass is not scored)."""

    tensors: list[torch.Tensor]
    observed: list


def window_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA for the output; then the cache layer that was just updated scores its tokens and compresses.

    query: (B, Hq, Q, D); key, value: (B, Hkv, T, D) the whole cache of this layer. A layer whose length
    differs from the one the model built its mask for (adaptive budgets) gets its own causal mask, and
    its queries move by the layer's `shift` like its new keys did. A batch of caches (`Rows`): each row alone."""
    if isinstance(key, Rows):
        return _each_row(module, query, key, value, scaling, **kwargs), None
    layer = _observer.layer
    ours = layer is not None and getattr(module, "layer_idx", None) == layer.layer_idx
    if ours:
        _observer.layer = None
        # a slot left over from a cache filled by hand must not score another cache's keys
        ours = key.data_ptr() == layer.keys.data_ptr() or key is getattr(layer, "aside_keys", None)
    if ours:
        if layer.shift:
            query = rotate(query, layer.shift, layer.inv_freq)
        if attention_mask is not None and attention_mask.shape[-1] != key.shape[-2]:
            attention_mask = _causal_mask(query.shape[2], key.shape[-2], key.device)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    if ours and getattr(layer, "aside_mask", None) is not None:  # questions asked aside: their own mask, nothing scored or cut
        mask = layer.aside_mask  # per key head, or for all: each query head takes its key head's row
        mask = mask.repeat_interleave(query.shape[1] // mask.shape[1], dim=1) if mask.shape[1] > 1 else mask
        return sdpa_attention_forward(module, query, key, value, mask, scaling=scaling, **kwargs)
    if ours and _can_fuse(layer, query, kwargs):
        return _attend_and_observe(module, layer, query, key, value, attention_mask, scaling, **kwargs), None
    out, weights = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    if ours:
        layer.observe(query, scaling)
    return out, weights


def _each_row(module, query, key: Rows, value: Rows, scaling, **kwargs) -> torch.Tensor:
    """Row b of the batch against its own cache, as a pass of that cache alone (its own positions came with
    the model's `position_ids`); (B, Q, Hq, Dv)."""
    outs = []
    for b, (keys, values, observed) in enumerate(zip(key.tensors, value.tensors, key.observed)):
        _observer.layer = observed
        mask = _causal_mask(query.shape[2], keys.shape[-2], keys.device)
        outs.append(window_attention(module, query[b:b + 1], keys, values, mask, scaling, **kwargs)[0])
    return torch.cat(outs, dim=0)


def _can_fuse(layer: KVWindowLayer, query: torch.Tensor, kwargs: dict) -> bool:
    """The observation window's attention can double as the output of its rows: the layer scores with
    the last queries, one sequence, and nothing beyond plain masked softmax attention is asked for."""
    cfg = layer.cfg
    return (layer.wants_attention and cfg.obs_select == "last" and not layer.probe
            and query.shape[0] == 1 and not kwargs.get("dropout") and kwargs.get("sliding_window") is None
            and kwargs.get("s_aux") is None and kwargs.get("sinks") is None and kwargs.get("position_bias") is None
            and kwargs.get("softcap") is None)


def _attend_and_observe(module, layer: KVWindowLayer, query, key, value, attention_mask, scaling, **kwargs):
    """Attention whose last `obs_window` rows are computed here: their softmax is both their output (P V)
    and the layer's scores, so scoring costs no second Q K^T and softmax. SDPA does the other rows.
    Returns (B, Q, Hq, Dv) like `sdpa_attention_forward`."""
    b, hq, q_len, _ = query.shape
    hkv, t = key.shape[1], key.shape[2]
    w = min(q_len, layer.cfg.obs_window)
    head = q_len - w
    rows = torch.arange(head, q_len, device=query.device)
    tail_mask = None if attention_mask is None else attention_mask[..., head:, :]
    probs = attention_probs(query, key, scaling, rows, tail_mask)  # (B, Hkv, G, W, T) float32
    tail = (probs.view(b, hkv, -1, t) @ value.float()).view(b, hq, w, -1)  # (B, Hq, W, Dv)
    tail = tail.to(query.dtype).transpose(1, 2)  # (B, W, Hq, Dv)
    if head:
        mask = attention_mask if attention_mask is not None else _causal_mask(q_len, t, key.device)
        out, _ = sdpa_attention_forward(module, query[:, :, :head], key, value, mask[..., :head, :], scaling=scaling,
                                        **kwargs)  # (B, Q - W, Hq, Dv)
        out = torch.cat([out, tail], dim=1)
    else:
        out = tail.contiguous()
    layer.observe(query, scaling, probs=probs)
    return out


def _causal_mask(q_len: int, kv_len: int, device) -> torch.Tensor:
    """(1, 1, Q, T) bool: query i sees keys up to T - Q + i (the new tokens are the last Q)."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device).unsqueeze(-1)
    return (torch.arange(kv_len, device=device) <= q_pos)[None, None]


AttentionInterface.register(ATTN_IMPLEMENTATION, window_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)  # same masks as SDPA


def use_window_attention(model) -> None:
    """Switch a model to the `kv_window` attention (SDPA output + cache scoring); the vision tower too,
    where it is plain SDPA since it has no cache."""
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
