"""Which cached tokens matter: pure tensor functions, one score per cached token.

- `observed_attention`: Inf-MLLM's signal. Softmax attention of the last `obs_window` queries over every
  cached key, summed over those queries and over the query heads that share a KV head (GQA), so each KV
  head gets its own score per token. Computed next to SDPA, never by switching to eager attention.
- `keep_priority`: turns accumulated scores and token facts into one priority per token; the cache keeps
  the top `budget`. Sinks and the recent window get +inf; under the LOOK-M text prior, conversation text
  outranks every visual token (image tokens, their boundary tokens and their timestamp text).

Nothing here changes the cache: `kv_window.py` gathers, merges and re-rotates.
"""

import torch

_TEXT_BONUS = 1e9  # larger than any accumulated attention: text is evicted only after all visual tokens


def observed_attention(query: torch.Tensor, keys: torch.Tensor, scaling: float, obs_window: int) -> torch.Tensor:
    """Attention mass each cached token receives from the latest queries.

    query: (B, Hq, Q, D) rotated queries of this forward pass; keys: (B, Hkv, T, D) every cached key,
    the Q new ones last. Returns (B, Hkv, T) float32: attention summed over the last min(Q, obs_window)
    queries and over the Hq / Hkv query heads of each KV head. Causal: query i (of Q) sees keys up to
    T - Q + i.
    """
    b, hq, q_len, d = query.shape
    hkv, t = keys.shape[1], keys.shape[2]
    w = min(q_len, obs_window)
    q = query[:, :, -w:].float().reshape(b, hkv, hq // hkv, w, d)  # (B, Hkv, G, W, D)
    logits = torch.einsum("bhgwd,bhtd->bhgwt", q, keys.float()) * scaling  # (B, Hkv, G, W, T)
    q_pos = torch.arange(t - w, t, device=keys.device).unsqueeze(-1)  # (W, 1)
    visible = torch.arange(t, device=keys.device).unsqueeze(0) <= q_pos  # (W, T)
    logits = logits.masked_fill(~visible, float("-inf"))
    return logits.softmax(dim=-1).sum(dim=(2, 3))  # (B, Hkv, T)


def keep_priority(
    scores: torch.Tensor | None,
    is_text: torch.Tensor,
    n_sink: int,
    recent: int,
    text_prior: bool,
) -> torch.Tensor:
    """Priority (B, H, T) of keeping each token; higher is kept first.

    scores: (B, H, T) accumulated attention, or None for StreamingLLM (then newer = higher, so the
    budget left after sinks fills with the most recent tokens); is_text: (B, H, T) bool, conversation
    text (not part of a frame). Sinks (first n_sink) and the last `recent` tokens get +inf.
    """
    t = is_text.shape[-1]
    idx = torch.arange(t, device=is_text.device, dtype=torch.float32)
    prio = idx.expand(is_text.shape).clone() if scores is None else scores.float().clone()
    if text_prior:
        prio = prio + is_text.float() * _TEXT_BONUS
    protected = (idx < n_sink) | (idx >= t - recent)  # (T,)
    return prio.masked_fill(protected, float("inf"))
