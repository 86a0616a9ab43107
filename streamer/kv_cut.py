"""The two ways a layer's cut gathers the kept tokens and folds in the evicted ones, chosen once per layer:
`TensorCut` (torch operations: any device and dtype) and `CompiledCut` (float32 on the CPU: the compiled loops
of `kv_kernels.py`, the same tokens and tags, the same keys and values to float32 rounding, faster).

Both do the same two steps: `keep` (the kept tokens (B, H, K) in stream order, and every per-token tag at
them) and `kv` (the kept keys, values and weights after merging the evicted pairs into them and turning the
kept keys by `delta`). Deliberately not here: which tokens go (`kv_layer.compress` with `kv_scoring`).
"""

import torch

from streamer.kv_kernels import TurnTable, cut_kv, keep_rows
from streamer.kv_merge import flat_rows, merge_into_kept
from streamer.rope import rotate


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, H, T[, D]) at idx (B, H, K) token indices of each head: one index_select over all heads."""
    b, h, t = x.shape[:3]
    rows = flat_rows(idx, t)
    if x.dim() == 4:
        return x.reshape(-1, x.shape[-1]).index_select(0, rows).view(b, h, -1, x.shape[-1])
    return x.reshape(-1).index_select(0, rows).view(b, h, -1)


class TensorCut:
    """The reference cut: torch operations (`kv_merge.merge_into_kept`, `rope.rotate`)."""

    def __init__(self, inv_freq: torch.Tensor, turns: TurnTable | None = None):
        self.inv_freq = inv_freq

    def keep(self, evict: torch.Tensor, t: int, tags: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list]:
        """The kept tokens (B, H, K) (all T but the ascending `evict` (B, H, E)) and each (B, H, T) tag at them
        (a tag of length 0 is passed through)."""
        b, h, e = evict.shape
        kept = torch.ones(b, h, t, dtype=torch.bool, device=evict.device).scatter_(-1, evict, False)
        keep = kept.nonzero()[:, -1].view(b, h, t - e)
        return keep, [take(x, keep) if x.shape[-1] else x for x in tags]

    def kv(self, keys, values, weight, keep, evict, delta, cfg):
        """Kept keys, values (B, H, K, D) and weights (B, H, K): merged (cfg.merge) and turned by delta (B, H, K)."""
        kept_k, kept_v, kept_w = take(keys, keep), take(values, keep), take(weight, keep)
        if cfg.merge != "none":
            kept_k, kept_v, kept_w = merge_into_kept(
                kept_k, kept_v, kept_w, take(keys, evict), take(values, evict), take(weight, evict),
                n_fixed=cfg.n_sink, mode=cfg.merge, window=cfg.merge_window,
                ev_slot=evict - torch.arange(evict.shape[-1], device=evict.device),  # kept tokens before each evicted one
                in_place=True)  # kept_k and kept_v are this cut's own copies
        if delta is not None:
            kept_k = rotate(kept_k, delta, self.inv_freq)
        return kept_k, kept_v, kept_w


class CompiledCut(TensorCut):
    """The same cut as compiled CPU loops (`kv_kernels`): float32 keys and values on the CPU."""

    def __init__(self, inv_freq: torch.Tensor, turns: TurnTable | None = None):
        super().__init__(inv_freq)
        self.turns = turns or TurnTable(inv_freq)

    def keep(self, evict, t, tags):
        return keep_rows(evict, t, tags)

    def kv(self, keys, values, weight, keep, evict, delta, cfg):
        table = None if delta is None else self.turns.down_to(int(delta.min()))
        return cut_kv(keys, values, weight, keep, evict, delta, table, cfg.n_sink, cfg.merge, cfg.merge_window)


def choose(cfg, keys: torch.Tensor, inv_freq: torch.Tensor, turns: TurnTable | None) -> TensorCut:
    """The compiled cut for float32 CPU caches (when `cfg.compiled` and merging, if any, is windowed), else the
    tensor cut."""
    compiled = (cfg.compiled and (cfg.merge == "none" or cfg.merge_window is not None)
                and keys.device.type == "cpu" and keys.dtype == torch.float32)
    return CompiledCut(inv_freq, turns) if compiled else TensorCut(inv_freq)
