"""A cut as two compiled CPU loops (numba) per layer: the kept tokens and their tags (`keep_rows`), and the key/value work (`cut_kv`: gather the kept pairs, merge the evicted ones
into them (LOOK-M) and turn the kept keys to their new positions).

Why: on the CPU a cut is about 25 tensor operations per layer for this part alone (an `index_select`
per tensor, the windowed cosine, the merge weights, two folds, the cos/sin lookup and four products for
the rotation), and at 256-token chunks their dispatch and the extra passes over the kept keys cost more
than the arithmetic (issue 18: merging 7.7-8.5% of ingest on SmolLM2-135M, goal 5%). Here each kept key
is read once, turned as it is copied, and each evicted pair is folded straight into its target, already
turned by the target's delta (RoPE is linear: turning a merged key equals merging turned keys).

It computes what `kv_layer.compress` computes with `kv_merge.merge_into_kept` and `rope.rotate` (the
reference path, which CUDA, half precision and `WindowConfig.compiled=False` take), to float32 rounding;
tests/test_kv_kernels.py holds the two side by side. `keep_rows` is the mask, `nonzero` and five
`index_select`s of the tensor path, so both paths keep the same tokens with the same tags; `kv_cut.py`
chooses between the two paths once per layer. Deliberately not here: the keep priorities and the selection
of the lowest (torch, on both paths), where kept keys move (the caller passes
the deltas' table rows), M-RoPE's block tags (the caller gathers them).
"""

import math

import numba
import numpy as np
import torch

MODE_CODE = {"none": 0, "average": 1, "pivot": 2, "weighted": 3}


def _flat(x: torch.Tensor) -> np.ndarray:
    """(B, H, ...) -> (B*H, ...) numpy view of a contiguous copy (of `x` itself when it is contiguous, so the
    loops write straight into the output tensors)."""
    return x.contiguous().flatten(0, 1).numpy()


class TurnTable:
    """cos | sin of the rotation by deltas 0, -1, -2, ... at the model's frequencies: row i is delta -i,
    (n, 2 * R/2) float32, grown when a cut needs a deeper delta. One per cache, shared by its layers."""

    def __init__(self, inv_freq: torch.Tensor):
        self.inv_freq, self.rows = inv_freq.float().cpu(), torch.zeros(0, 2 * inv_freq.shape[0])

    def down_to(self, lowest: int) -> torch.Tensor:
        """The table with rows for deltas 0..lowest (<= 0) at least."""
        if self.rows.shape[0] < 1 - lowest:
            n = max(1 - lowest, 2 * self.rows.shape[0])
            angles = -torch.arange(n, dtype=torch.float32).unsqueeze(-1) * self.inv_freq  # (n, R/2)
            self.rows = torch.cat((angles.cos(), angles.sin()), dim=-1)
        return self.rows


def keep_rows(evict: torch.Tensor, t: int, tags: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The kept tokens (B, H, K) int64 in stream order (all T but the ascending `evict` (B, H, E)) and the
    per-token tags at them: tags = (modality, times, position, similar, rotary), each (B, H, T) (int8, float32,
    int64, float32, int64); similar and rotary may be (B, H, 0) (not kept: passed through)."""
    b, h, e = evict.shape
    k = t - e
    keep = torch.empty(b, h, k, dtype=torch.int64)
    out = [x.new_empty(b, h, k) if x.shape[-1] else x for x in tags]
    _keep_rows(_flat(evict.long()), t, *(_flat(x) for x in tags), _flat(keep), *(_flat(x) for x in out))
    return keep, out


def cut_kv(keys: torch.Tensor, values: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor, evict: torch.Tensor,
           delta: torch.Tensor | None, table: torch.Tensor | None, n_fixed: int, mode: str, window: int | None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kept keys, values and weights (B, H, K, D), (B, H, K, D), (B, H, K) after a cut.

    keys, values: (B, H, T, D) float32 on the CPU; weight: (B, H, T) original tokens each one stands for;
    keep: (B, H, K) and evict: (B, H, E) token indices, each ascending; delta: (B, H, K) int64 <= 0, where
    each kept key moves (None: nowhere), with `table` = `TurnTable.down_to(delta.min())`; n_fixed, mode,
    window: as `merge_into_kept` (window None: every kept key but the sinks).
    """
    b, h, _, d = keys.shape
    k = keep.shape[-1]
    out_k, out_v, out_w = keys.new_empty(b, h, k, d), values.new_empty(b, h, k, d), weight.new_empty(b, h, k)

    if delta is None:  # no turn: an empty table (no rotated pairs, every dim copied)
        rows, table = np.zeros((b * h, k), np.int64), np.zeros((1, 0), np.float32)
    else:
        rows, table = _flat(-delta.long()), table.contiguous().numpy()
    half = table.shape[-1] // 2
    c = k - n_fixed
    _cut(_flat(keys), _flat(values), _flat(weight.float()), _flat(keep.long()), _flat(evict.long()),
         rows, table, half, n_fixed, window if window is not None and c > window else 0, MODE_CODE[mode],
         _flat(out_k), _flat(out_v), _flat(out_w))
    return out_k, out_v, out_w


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _cut(src_k, src_v, src_w, keep, evict, rows, table, half, n_fixed, window, mode, out_k, out_v, out_w):
    """Per head g (all arrays (G, ...)): out = the kept rows of src, keys turned by table[rows]; then each
    evicted pair joins the kept token whose old key is most similar (cosine, among the `window` kept slots
    around where it left, or all non-sink ones when window is 0) with LOOK-M's weights (mode 1 average,
    2 pivot, 3 weighted; 0: no merging)."""
    g_n, _, d_n = src_k.shape
    k_n, e_n = keep.shape[1], evict.shape[1]
    target = np.empty(e_n, np.int64)
    w_ev = np.empty(e_n, np.float32)
    w_keep = np.empty(k_n, np.float32)
    total = np.empty(k_n, np.float32)  # each kept token's weight after merging
    scaled = np.zeros(k_n, np.bool_)
    for g in range(g_n):
        for j in range(k_n):
            r = keep[g, j]
            out_w[g, j] = src_w[g, r]
            q = rows[g, j]
            for i in range(d_n):
                out_v[g, j, i] = src_v[g, r, i]
            for i in range(half):  # rotated pairs (i, half + i); partial rotary: the rest is copied
                a, z = src_k[g, r, i], src_k[g, r, half + i]
                out_k[g, j, i] = a * table[q, i] - z * table[q, half + i]
                out_k[g, j, half + i] = z * table[q, i] + a * table[q, half + i]
            for i in range(2 * half, d_n):
                out_k[g, j, i] = src_k[g, r, i]
        if mode == 0 or e_n == 0 or k_n <= n_fixed:
            continue
        for x in range(e_n):
            r = evict[g, x]
            norm_e = 0.0
            for i in range(d_n):
                norm_e += src_k[g, r, i] * src_k[g, r, i]
            norm_e = max(math.sqrt(norm_e), 1e-12)
            lo, hi = n_fixed, k_n
            if window > 0:  # the kept tokens before this evicted one: r - x
                lo = min(max(r - x - window // 2, n_fixed), k_n - window)
                hi = lo + window
            best, at = -3.0, lo  # below any cosine
            for j in range(lo, hi):
                kr = keep[g, j]
                dot = 0.0
                norm_k = 0.0
                for i in range(d_n):
                    dot += src_k[g, kr, i] * src_k[g, r, i]
                    norm_k += src_k[g, kr, i] * src_k[g, kr, i]
                cos = dot / (norm_e * max(math.sqrt(norm_k), 1e-12))
                if cos > best:
                    best, at = cos, j
            target[x] = at
            w_ev[x] = max(best, 0.0) if mode == 3 else (src_w[g, r] if mode == 1 else 1.0)
        for j in range(k_n):
            w_keep[j] = out_w[g, j] if mode == 1 else 1.0
            total[j] = 0.0
        if mode == 2:  # pivot: the n tokens merged into one kept token get 1/n each
            for x in range(e_n):
                total[target[x]] += 1.0
            for x in range(e_n):
                w_ev[x] = 1.0 / total[target[x]]
        for j in range(k_n):
            total[j] = w_keep[j]
        for x in range(e_n):
            total[target[x]] += w_ev[x]
            out_w[g, target[x]] += src_w[g, evict[g, x]]
        for x in range(e_n):  # kept -> kept * w_keep / total + sum of evicted * w_ev / total
            j, r = target[x], evict[g, x]
            norm = max(total[j], 1e-12)
            if not scaled[j]:
                f = w_keep[j] / norm
                for i in range(d_n):
                    out_k[g, j, i] *= f
                    out_v[g, j, i] *= f
                scaled[j] = True
            s = w_ev[x] / norm
            q = rows[g, j]
            for i in range(d_n):
                out_v[g, j, i] += s * src_v[g, r, i]
            for i in range(half):  # the evicted key joins turned by its target's delta
                a, z = src_k[g, r, i], src_k[g, r, half + i]
                out_k[g, j, i] += s * (a * table[q, i] - z * table[q, half + i])
                out_k[g, j, half + i] += s * (z * table[q, i] + a * table[q, half + i])
            for i in range(2 * half, d_n):
                out_k[g, j, i] += s * src_k[g, r, i]
        for x in range(e_n):
            scaled[target[x]] = False


@numba.njit(cache=True, nogil=True)
def _keep_rows(evict, t_n, modality, times, position, similar, rotary,
               keep, o_modality, o_times, o_position, o_similar, o_rotary):
    """Per head g: keep[g] = 0..t_n-1 without evict[g] (ascending), and each tag at those rows."""
    e_n = evict.shape[1]
    for g in range(evict.shape[0]):
        x, j = 0, 0
        for r in range(t_n):
            if x < e_n and evict[g, x] == r:
                x += 1
                continue
            keep[g, j] = r
            o_modality[g, j] = modality[g, r]
            o_times[g, j] = times[g, r]
            o_position[g, j] = position[g, r]
            if similar.shape[1]:
                o_similar[g, j] = similar[g, r]
            if rotary.shape[1]:
                o_rotary[g, j] = rotary[g, r]
            j += 1
