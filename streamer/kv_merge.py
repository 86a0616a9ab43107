"""LOOK-M merging: fold evicted KV pairs into their most similar kept token instead of dropping them.

Each evicted token picks the kept token whose key is most similar (cosine) within the same KV head, and
its key and value are merged into that token's. Three variants, as in LOOK-M (arXiv 2406.18139):

- `average`: running mean over everything the kept token now stands for (each token counts once, so a
  kept token that already absorbed n tokens has weight n + 1).
- `pivot`: the kept token is the pivot: it keeps half the weight, the mean of the newly merged tokens
  gets the other half.
- `weighted`: the kept token has weight 1, each merged token its cosine similarity (clamped at 0).

Which kept token: the most similar key among every kept key (`window=None`), or, by default (the
cache's `merge_window`), among the `window` kept keys around the place the evicted token leaves. Kept
keys are RoPE'd at their positions, and on SmolLM2-135M's own keys the most similar kept key of an
evicted one lies within 256 kept slots of it 96-100% of the time (median distance 1-2 slots), so the
window finds the same token almost always at a cost that does not grow with the budget. Evicted tokens
go in blocks of `_BLOCK` consecutive ones, each block against one window centred on it (one batched
matmul). Attention sinks (the first `n_fixed` kept tokens) never absorb.

Pure tensor function (inputs are not modified); which tokens are kept or evicted is decided elsewhere.
"""

import torch
import torch.nn.functional as F

MERGE_MODES = ("none", "average", "pivot", "weighted")
_BLOCK = 32  # evicted tokens that share one window of candidates


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge evicted pairs into kept ones.

    keep_k, keep_v: (B, H, K, D); keep_w: (B, H, K) how many original tokens each kept token stands
    for; ev_k, ev_v: (B, H, E, D); ev_w: (B, H, E); n_fixed: the first n_fixed kept tokens (attention
    sinks) stay untouched; window: compare with this many kept keys around each evicted token's place
    (None: all); ev_slot: (B, H, E) ascending, how many kept tokens precede each evicted one in stream
    order (needed with a window). Returns merged (keys, values, weights), same shapes as kept.
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

    b, h, k = keep_w.shape
    flat = (target + torch.arange(b * h, device=target.device).view(b, h, 1) * k).flatten()  # (B*H*E,)
    rows, which = flat.unique(return_inverse=True)  # (U,) kept tokens that absorb, (B*H*E,) into which
    wk = w_keep.reshape(-1)[rows]  # (U,)
    norm = wk.index_add(0, which, w_ev.reshape(-1)).clamp(min=1e-12).unsqueeze(-1)  # (U, 1)

    def fold(kept: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
        """Weighted mean of each absorbing kept token with the evicted ones merged into it; only those rows change."""
        d = kept.shape[-1]
        out = kept.clone(memory_format=torch.contiguous_format)
        flat_out = out.view(-1, d)  # (B*H*K, D)
        total = (flat_out[rows].float() * wk.unsqueeze(-1)).index_add_(
            0, which, ev.reshape(-1, d).float() * w_ev.reshape(-1, 1))  # (U, D)
        flat_out[rows] = (total / norm).to(kept.dtype)
        return out

    new_w = keep_w.float().scatter_add(-1, target, ev_w.float())
    return fold(keep_k, ev_k), fold(keep_v, ev_v), new_w


def nearest_kept(
    keep_k: torch.Tensor, ev_k: torch.Tensor, n_fixed: int, window: int | None, ev_slot: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine, index) (B, H, E) of the most similar kept key (index >= n_fixed) for each evicted key.

    With a window smaller than the candidates, evicted tokens go in blocks of `_BLOCK` (in stream order)
    and each block is compared with the `window` candidates centred on the block's middle slot."""
    ev = F.normalize(ev_k.float(), dim=-1)  # (B, H, E, D)
    b, h, e, d = ev.shape
    k = keep_k.shape[-2]
    c = k - n_fixed  # candidates: every kept token but the sinks
    if window is None or c <= window or ev_slot is None:
        sim = ev @ F.normalize(keep_k[..., n_fixed:, :].float(), dim=-1).transpose(-1, -2)  # (B, H, E, C)
        best, target = sim.max(dim=-1)
        return best, target + n_fixed
    nb = -(-e // _BLOCK)
    first = torch.arange(nb, device=ev.device) * _BLOCK
    last = (first + _BLOCK - 1).clamp(max=e - 1)
    mid = (ev_slot[..., first] + ev_slot[..., last]) // 2 - n_fixed  # (B, H, nb) block centre among candidates
    start = (mid - window // 2).clamp(0, c - window) + n_fixed  # (B, H, nb) window start among kept tokens
    idx = start.unsqueeze(-1) + torch.arange(window, device=ev.device)  # (B, H, nb, W)
    flat = (idx + torch.arange(b * h, device=ev.device).view(b, h, 1, 1) * k).flatten()
    keys = keep_k.reshape(-1, d)
    cand = keys.index_select(0, flat).float().view(b, h, nb, window, d)  # (B, H, nb, W, D)
    cand = F.normalize(cand, dim=-1)
    ev = F.pad(ev, (0, 0, 0, nb * _BLOCK - e)).view(b, h, nb, _BLOCK, d)  # (B, H, nb, G, D)
    best, j = (ev @ cand.transpose(-1, -2)).max(dim=-1)  # (B, H, nb, G)
    target = (start.unsqueeze(-1) + j).flatten(2)[..., :e]  # (B, H, E)
    return best.flatten(2)[..., :e], target
