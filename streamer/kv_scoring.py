"""Which cached tokens matter: pure tensor functions, one score per cached token.

- `attention_probs`, `observed_attention`: Inf-MLLM's signal. Softmax attention of the last `obs_window`
  queries over every cached key, per query head (B, Hkv, G, W, T); the scorers (`kv_scorers/`) sum it
  over those queries and the query heads that share a KV head (GQA), or take its last row. Computed next
  to SDPA, never by switching to eager attention.
- `elite_attention`: AirCache's "elite" observation window: the same sum, over the conversation-text
  queries that attend to visual tokens most strongly and most consistently across heads.
- `attention_spread`, `split_budget`: AirCache's adaptive layer-wise budgets: how thinly each layer
  spreads its importance, and a split of one total budget in proportion to it, with a floor per layer.
- `frame_redundancy`: temporal redundancy (after InfiniPot-V): how much each new frame token repeats the
  token at the same place in the frame before it (cosine of their values; values carry no RoPE, so the
  same content at another position still matches).
- `keep_priority`: turns a score (any scorer's) and token facts into one priority per token; the cache keeps
  the top `budget`. Sinks and the recent window get +inf; under the LOOK-M text prior, conversation text
  outranks every visual token (image tokens, their boundary tokens and their timestamp text); tokens
  flagged redundant rank below every other evictable token.

Nothing here changes the cache: `KVWindowLayer.compress` (`kv_layer.py`) gathers, merges and re-rotates.
"""

import torch


def attention_probs(query: torch.Tensor, keys: torch.Tensor, scaling: float, rows: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal softmax attention of some of this pass's queries over every cached key.

    query: (B, Hq, Q, D) rotated queries of this forward pass; keys: (B, Hkv, T, D) every cached key,
    the Q new ones last; rows: (W,) indices into the Q queries. Returns (B, Hkv, G, W, T) float32 with
    G = Hq / Hkv query heads per KV head (GQA). Query i (of Q) sees keys up to T - Q + i, or, with
    `mask` ((B or 1, 1, W, T) for those rows: bool, True = may attend, or additive float), what it allows.
    """
    b, hq, q_len, d = query.shape
    hkv, t, w = keys.shape[1], keys.shape[2], rows.shape[0]
    q = (query[:, :, rows].float() * scaling).reshape(b, hkv, (hq // hkv) * w, d)  # (B, Hkv, G*W, D)
    logits = q @ keys.float().transpose(-1, -2)  # (B, Hkv, G*W, T): one batched matmul, no copies
    logits = logits.view(b, hkv, hq // hkv, w, t)  # (B, Hkv, G, W, T)
    if mask is None:  # only the last Q keys can be hidden from a query of this pass: mask that tail in place
        hidden = torch.arange(q_len, device=keys.device).unsqueeze(0) > rows.to(keys.device).unsqueeze(-1)  # (W, Q)
        logits[..., t - q_len:].masked_fill_(hidden, float("-inf"))
    elif mask.dtype == torch.bool:
        logits.masked_fill_(~mask.unsqueeze(2), float("-inf"))  # (B, 1, 1, W, T) over the G heads
    else:
        logits += mask.unsqueeze(2).float()
    return logits.softmax(dim=-1)


def observed_attention(query: torch.Tensor, keys: torch.Tensor, scaling: float, obs_window: int) -> torch.Tensor:
    """Inf-MLLM's window: attention (B, Hkv, G, W, T) of the last W = min(Q, obs_window) queries."""
    q_len = query.shape[2]
    rows = torch.arange(max(0, q_len - obs_window), q_len)
    return attention_probs(query, keys, scaling, rows)


def elite_attention(
    query: torch.Tensor, keys: torch.Tensor, scaling: float, obs_window: int,
    candidates: torch.Tensor, visual: torch.Tensor,
) -> torch.Tensor:
    """AirCache's elite window: attention (B, Hkv, G, W, T) of the W <= `obs_window` candidate queries that
    look at visual tokens the most, and the most consistently across heads.

    candidates: (Q,) bool, the queries allowed in (conversation text of this pass); visual: (T,) bool,
    keys that belong to frames. A query's relevance is mean - std over all query heads of the attention
    mass it puts on visual keys: strong and agreed on by the heads. Falls back to the last-N window when
    the pass has no candidate (e.g. a chunk of frames).
    """
    rows = candidates.nonzero().flatten()
    if rows.numel() == 0 or not visual.any():
        return observed_attention(query, keys, scaling, obs_window)
    probs = attention_probs(query, keys, scaling, rows)  # (B, Hkv, G, W, T)
    mass = probs[..., visual].sum(dim=-1).flatten(1, 2)  # (B, Hq, W) visual attention per head
    relevance = (mass.mean(dim=1) - mass.std(dim=1, correction=0)).mean(dim=0)  # (W,)
    elite = relevance.topk(min(obs_window, rows.numel())).indices
    return probs[:, :, :, elite]


def attention_spread(scores: torch.Tensor) -> float:
    """How thinly a layer spreads its importance: effective number of tokens exp(entropy) over T, in
    (0, 1], averaged over batch and heads. scores: (B, H, T) non-negative. Concentrated layers score low
    (a few tokens carry the mass, a small budget keeps them); flat layers score near 1."""
    p = scores.float() / scores.float().sum(dim=-1, keepdim=True).clamp(min=1e-12)
    entropy = -(p * p.clamp(min=1e-12).log()).sum(dim=-1)  # (B, H)
    return float((entropy.exp() / scores.shape[-1]).mean())


def split_budget(total: int, spread: list[float], floor: int, cap: int) -> list[int]:
    """AirCache's layer-wise budgets: `total` tokens over layers in proportion to their spread, each
    between `floor` and `cap`, summing to exactly `total` (largest remainders get the leftovers)."""
    n = len(spread)
    if n * floor > total or n * cap < total:
        raise ValueError(f"cannot split {total} tokens over {n} layers within [{floor}, {cap}]")
    w = torch.tensor(spread, dtype=torch.float64).clamp(min=1e-6)
    budgets = torch.full((n,), float(floor), dtype=torch.float64)
    free = torch.ones(n, dtype=torch.bool)
    while True:  # water-filling: layers that hit the cap give their share back to the others
        share = (total - budgets[~free].sum() - floor * free.sum()) * w * free / (w * free).sum()
        budgets = torch.where(free, floor + share, budgets)
        over = free & (budgets > cap)
        if not over.any():
            break
        budgets[over], free = float(cap), free & ~over
    out = budgets.floor().long()
    rest = total - int(out.sum())
    out[(budgets - out).argsort(descending=True)[:rest]] += 1
    return out.tolist()


def frame_redundancy(values: torch.Tensor, times: torch.Tensor, is_image: torch.Tensor,
                     previous: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """How much each new frame token repeats the frame before it.

    An image token gets the cosine similarity of its value with the value at the same place (the same
    index among its frame's image tokens) in the frame before; the frame's other tokens (boundaries,
    timestamp text) get the lower quartile of its image tokens' similarities (the 3rd least of 9), so they
    repeat unless at least a quarter of the frame changed. (The least of them, the rule before, let one
    token touched by camera noise or a distractor keep every frame's text: at 2% of the cache in the noisy
    world that text crowded out the needle: 18/40 answers, 37/40 with the quartile; docs/redundancy.md.)
    values: (B, H, C, D) of one append; times: (C,) video second of each token (NaN for text); is_image:
    (C,) bool; previous: (B, H, P, D) image-token values of the last frame of the previous append, or None.
    Returns (similarity (B, H, C): 0 for text, for image tokens without a time (NaN), for a first frame and
    for a frame whose predecessor has another number of image tokens; the last frame's (B, H, P, D) values, or `previous` if there is none).
    """
    similarity = values.new_zeros(values.shape[:3], dtype=torch.float32)  # (B, H, C)
    if not bool(is_image.any()):  # text (a decoding step): nothing to compare
        return similarity, previous
    for t in times[is_image & ~times.isnan()].unique(sorted=True).tolist():  # image tokens without a time: no frame
        in_frame = times == t
        idx = (is_image & in_frame).nonzero().squeeze(-1)  # (P,) this frame's image tokens
        current = values[:, :, idx].float()  # (B, H, P, D)
        if previous is not None and previous.shape == current.shape:
            sim = torch.nn.functional.cosine_similarity(current, previous, dim=-1)  # (B, H, P)
            similarity[:, :, idx] = sim
            quartile = sim.kthvalue(1 + (sim.shape[-1] - 1) // 4, dim=-1, keepdim=True).values  # (B, H, 1)
            similarity[:, :, (~is_image & in_frame).nonzero().squeeze(-1)] = quartile
        previous = current
    return similarity, previous


def keep_priority(
    scores: torch.Tensor | None,
    is_text: torch.Tensor,
    n_sink: int,
    recent: int,
    text_prior: bool,
    redundant: torch.Tensor | None = None,
) -> torch.Tensor:
    """Priority (B, H, T) of keeping each token; higher is kept first.

    scores: (B, H, T) the scorers' score (higher = keep), or None for newest-first (StreamingLLM); is_text: (B, H, T) bool, conversation
    text (not part of a frame); redundant: (B, H, T) bool, frame tokens that repeat the frame before them
    (they go first, in their own order). Sinks (first n_sink) and the last `recent` tokens get +inf.
    """
    t = is_text.shape[-1]
    idx = torch.arange(t, device=is_text.device, dtype=torch.float32)
    prio = idx.expand(is_text.shape).clone() if scores is None else scores.float().clone()
    if text_prior:
        # text outranks every visual token by more than any score gap, yet keeps its own order: a fixed
        # 1e9 bonus rounded every text score to the same float32 (spacing 64 there), so a cache of text
        # kept an arbitrary set of it
        bonus = prio.amax(dim=-1, keepdim=True).clamp(min=0) + 1.0  # (B, H, 1)
        prio = prio + is_text.float() * bonus
    if redundant is not None:  # below every other token by more than any gap, in their own order
        span = prio.amax(dim=-1, keepdim=True) - prio.amin(dim=-1, keepdim=True) + 1.0  # (B, H, 1)
        prio = prio - redundant.float() * span
    protected = (idx < n_sink) | (idx >= t - recent)  # (T,)
    return prio.masked_fill(protected, float("inf"))
