"""LOOK-M merging: fold evicted KV pairs into their most similar kept token instead of dropping them.

Each evicted token picks the kept token whose key is most similar (cosine) within the same KV head, and
its key and value are merged into that token's. Three variants, as in LOOK-M (arXiv 2406.18139):

- `average`: running mean over everything the kept token now stands for (each token counts once, so a
  kept token that already absorbed n tokens has weight n + 1).
- `pivot`: the kept token is the pivot: it keeps half the weight, the mean of the newly merged tokens
  gets the other half.
- `weighted`: the kept token has weight 1, each merged token its cosine similarity (clamped at 0).

Which kept token: the most similar key among every kept key (`window=None`), or, by default (the
cache's `merge_window`, 8), among the `window` kept keys around the slot the evicted token leaves. Kept
keys are RoPE'd at their positions, and on SmolLM2-135M's own keys the most similar kept key of an
evicted one is a near neighbour (median distance 1-2 kept slots), so a small window finds the same token
almost always, at a cost that grows with the evicted tokens only, not with the budget (issue 18: window 8
against every kept key moved the first answer token by a KL of 0.008-0.020 nats, where the bounded cache
is 2.7 nats from the full cache; BENCHMARKS.md section 9). Attention sinks (the first `n_fixed` kept
tokens) never absorb.

Pure tensor function (inputs are not modified unless `in_place`); which tokens are kept or evicted is
decided elsewhere.
"""

import torch
import torch.nn.functional as F

MERGE_MODES = ("none", "average", "pivot", "weighted")


def flat_rows(idx: torch.Tensor, length: int) -> torch.Tensor:
    """Token indices (B, H, ...) into each head's `length` tokens -> (N,) rows of the tensor flattened to
    (B*H*length, ...), so one `index_select` gathers every head's tokens at once."""
    b, h = idx.shape[:2]
    offset = torch.arange(b * h, device=idx.device).view(b, h, *[1] * (idx.dim() - 2)) * length
    return (idx + offset).flatten()


def merge_into_kept(
    keep_k: torch.Tensor,
    keep_v: torch.Tensor,
    keep_w: torch.Tensor,
    ev_k: torch.Tensor,
    ev_v: torch.Tensor,
    ev_w: torch.Tensor,
    n_fixed: int,
    mode: str,
    window: int | None = None,
    ev_slot: torch.Tensor | None = None,
    in_place: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge evicted pairs into kept ones.

    keep_k, keep_v: (B, H, K, D); keep_w: (B, H, K) how many original tokens each kept token stands
    for; ev_k, ev_v: (B, H, E, D); ev_w: (B, H, E); n_fixed: the first n_fixed kept tokens (attention
    sinks) stay untouched; window: compare with this many kept keys around each evicted token's place
    (None: all); ev_slot: (B, H, E) ascending, how many kept tokens precede each evicted one in stream
    order (needed with a window); in_place: write the merged keys and values into keep_k and keep_v (the
    cache passes fresh copies). Returns merged (keys, values, weights), same shapes as kept.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {mode!r}; expected one of {MERGE_MODES}")
    if mode == "none" or ev_k.shape[-2] == 0 or keep_k.shape[-2] <= n_fixed:
        return keep_k, keep_v, keep_w
    best, target = nearest_kept(keep_k, ev_k, n_fixed, window, ev_slot)  # (B, H, E)

    if mode == "average":
        w_ev, w_keep = ev_w.float(), keep_w.float()
    elif mode == "weighted":
        w_ev, w_keep = best.clamp(min=0.0), torch.ones_like(keep_w, dtype=torch.float32)
    else:  # pivot: the newly merged tokens share half the weight, whatever their number
        counts = torch.zeros_like(keep_w, dtype=torch.float32).scatter_add_(-1, target, torch.ones_like(best))
        w_ev = 1.0 / counts.gather(-1, target)  # (B, H, E): each of the n merged gets 1/n
        w_keep = torch.ones_like(keep_w, dtype=torch.float32)

    flat = flat_rows(target, keep_w.shape[-1])  # (B*H*E,)
    wk = w_keep.reshape(-1)  # (B*H*K,)
    norm = wk.index_add(0, flat, w_ev.reshape(-1)).clamp(min=1e-12)  # (B*H*K,) total weight after merging
    ev_scale = (w_ev.reshape(-1) / norm[flat]).unsqueeze(-1)  # (B*H*E, 1) each evicted token's share of its target

    def fold(kept: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
        """Weighted mean of each kept token with the evicted ones merged into it, written as pulls toward the
        evicted ones: x + sum_e s_e (ev_e - x) = x w/norm + sum_e s_e ev_e. Only the E target rows are read and
        written (no pass over all K); float32 kept tensors are updated in place when `in_place`."""
        d = kept.shape[-1]
        rows = kept.reshape(-1, d)  # (B*H*K, D), a view when kept is contiguous
        if rows.dtype != torch.float32:
            rows = rows.float()  # a fresh float32 copy: the math stays in float32
        elif not (in_place and rows.data_ptr() == kept.data_ptr()):
            rows = rows.clone()
        pull = (ev.reshape(-1, d).float() - rows.index_select(0, flat)) * ev_scale  # (B*H*E, D), from the old rows
        return rows.index_add_(0, flat, pull).to(kept.dtype).view(kept.shape)  # (B*H*K, D) -> (B, H, K, D)

    new_w = keep_w.float().scatter_add(-1, target, ev_w.float())
    return fold(keep_k, ev_k), fold(keep_v, ev_v), new_w


def nearest_kept(
    keep_k: torch.Tensor, ev_k: torch.Tensor, n_fixed: int, window: int | None, ev_slot: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine, index) (B, H, E) of the most similar kept key (index >= n_fixed) for each evicted key.

    With a window smaller than the candidates, each evicted key is compared with the `window` kept keys
    around the slot it leaves (`ev_slot`: half before, half after, shifted inside the candidates)."""
    ev = F.normalize(ev_k.float(), dim=-1)  # (B, H, E, D)
    b, h, e, d = ev.shape
    k = keep_k.shape[-2]
    c = k - n_fixed  # candidates: every kept token but the sinks
    if window is None or c <= window or ev_slot is None:
        sim = ev @ F.normalize(keep_k[..., n_fixed:, :].float(), dim=-1).transpose(-1, -2)  # (B, H, E, C)
        best, target = sim.max(dim=-1)
        return best, target + n_fixed
    start = (ev_slot - window // 2).clamp(n_fixed, k - window)  # (B, H, E) first candidate of each evicted key
    idx = start.unsqueeze(-1) + torch.arange(window, device=ev.device)  # (B, H, E, W) kept slots
    flat = flat_rows(idx, k)  # (B*H*E*W,)
    cand = keep_k.reshape(-1, d).index_select(0, flat).float().view(b, h, e, window, d)  # (B, H, E, W, D)
    sim = (cand * ev.unsqueeze(-2)).sum(dim=-1) / cand.norm(dim=-1).clamp(min=1e-12)  # (B, H, E, W) cosine
    best, j = sim.max(dim=-1)  # (B, H, E)
    return best, start + j
