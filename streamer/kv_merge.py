"""LOOK-M merging: fold evicted KV pairs into their most similar kept token instead of dropping them.

Each evicted token picks the kept token whose key is most similar (cosine) within the same KV head, and
its key and value are merged into that token's. Three variants, as in LOOK-M (arXiv 2406.18139):

- `average`: running mean over everything the kept token now stands for (each token counts once, so a
  kept token that already absorbed n tokens has weight n + 1).
- `pivot`: the kept token is the pivot: it keeps half the weight, the mean of the newly merged tokens
  gets the other half.
- `weighted`: the kept token has weight 1, each merged token its cosine similarity (clamped at 0).

Pure tensor function; which tokens are kept or evicted is decided elsewhere.
"""

import torch

MERGE_MODES = ("none", "average", "pivot", "weighted")


def merge_into_kept(
    keep_k: torch.Tensor,
    keep_v: torch.Tensor,
    keep_w: torch.Tensor,
    ev_k: torch.Tensor,
    ev_v: torch.Tensor,
    ev_w: torch.Tensor,
    can_absorb: torch.Tensor,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge evicted pairs into kept ones.

    keep_k, keep_v: (B, H, K, D); keep_w: (B, H, K) how many original tokens each kept token stands
    for; ev_k, ev_v: (B, H, E, D); ev_w: (B, H, E); can_absorb: (B, H, K) bool, False for tokens that
    must stay untouched (attention sinks). Returns merged (keys, values, weights), same shapes as kept.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {mode!r}; expected one of {MERGE_MODES}")
    if mode == "none" or ev_k.shape[-2] == 0:
        return keep_k, keep_v, keep_w
    kf, ekf = keep_k.float(), ev_k.float()
    sim = torch.nn.functional.normalize(ekf, dim=-1) @ torch.nn.functional.normalize(kf, dim=-1).transpose(-1, -2)
    sim.masked_fill_(~can_absorb.unsqueeze(-2), float("-inf"))  # (B, H, E, K), in place: it is large
    best, target = sim.max(dim=-1)  # (B, H, E)

    if mode == "average":
        w_ev, w_keep = ev_w.float(), keep_w.float()
    elif mode == "weighted":
        w_ev, w_keep = best.clamp(min=0.0), torch.ones_like(keep_w, dtype=torch.float32)
    else:  # pivot: the newly merged tokens share half the weight, whatever their number
        counts = torch.zeros_like(keep_w, dtype=torch.float32).scatter_add_(-1, target, torch.ones_like(best))
        w_ev = 1.0 / counts.gather(-1, target)  # (B, H, E): each of the n merged gets 1/n
        w_keep = torch.ones_like(keep_w, dtype=torch.float32)

    def fold(kept: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
        idx = target.unsqueeze(-1).expand(-1, -1, -1, kept.shape[-1])  # (B, H, E, D)
        total = (kept.float() * w_keep.unsqueeze(-1)).scatter_add(-2, idx, ev.float() * w_ev.unsqueeze(-1))
        norm = w_keep.scatter_add(-1, target, w_ev).clamp(min=1e-12)  # (B, H, K)
        return (total / norm.unsqueeze(-1)).to(kept.dtype)

    new_w = keep_w.float().scatter_add(-1, target, ev_w.float())
    return fold(keep_k, ev_k), fold(keep_v, ev_v), new_w
