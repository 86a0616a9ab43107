"""Re-rotation of cached keys to new RoPE positions, and where kept keys move when the cache closes gaps.

Keys enter the cache already rotated at the position the model gave them. When the cache drops tokens
it closes the gaps: every kept key moves to a new position, which RoPE makes a pure rotation by the
position delta, `rotate(k_at_p, d) == k_at_(p+d)`. The frequencies come from the model's own RoPE
settings (`rope_parameters`, including the scaled types `linear`, `dynamic`, `yarn`, `llama3`,
`longrope`) through transformers' `ROPE_INIT_FUNCTIONS`, so what we rotate by is what the model used.

1-D RoPE (`gap_deltas`): kept keys move to 0..K-1 in stream order.

M-RoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; `is_mrope`): a token has three positions (t, h, w), and each
rotary frequency takes its angle from one of them (contiguous sections in Qwen2/2.5-VL, interleaved in
Qwen3-VL). The rule here: **a kept token moves by the same delta on all three axes**, so a frame keeps its
inner layout (rows, columns, time relative to each other), and a shift by d on every axis rotates every
frequency by d x its inverse frequency whatever its section: `rotate` is the same function for 1-D and
M-RoPE. The delta is chosen per position block (`mrope_gap_deltas`): the model lays a prompt out as
blocks, one text token (1 position) or one video block of frames (starting at `anchor`, taking
`advance` = max(grid h, grid w) positions, its t axis spaced by video time), each starting where the
previous one ends. Compaction lays the kept blocks out again the same way, in stream order from 0, so a
block loses its place only by the advances of whole blocks evicted before it; a partly kept block keeps
its advance. With only text this is exactly the 1-D rule.
"""

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


# text decoders whose position_ids are (3, B, T): (t, h, w) M-RoPE
MROPE_MODEL_TYPES = frozenset({"qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text", "qwen3_vl_moe_text"})


def is_mrope(config) -> bool:
    """True when the model's text decoder uses 3-D M-RoPE positions."""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    params = getattr(cfg, "rope_parameters", None) or {}
    return getattr(cfg, "model_type", None) in MROPE_MODEL_TYPES or "mrope_section" in params


def gap_deltas(keep: torch.Tensor) -> torch.Tensor:
    """1-D RoPE: deltas (B, H, K) <= 0 that move kept keys, at positions `keep` (B, H, K) ascending, to 0..K-1."""
    return torch.arange(keep.shape[-1], device=keep.device) - keep


def mrope_gap_deltas(anchor: torch.Tensor, advance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE: (deltas, new anchors), both (B, H, K), for kept tokens in stream order.

    anchor: (B, H, K) start position of the block each kept token belongs to (non-decreasing);
    advance: (B, H, K) positions that block takes. Kept blocks are laid out from 0, each at the end of
    the previous one; every token of a block moves by its block's delta (on all three axes). The
    position after the last block is `new_anchor[..., -1] + advance[..., -1]`.
    """
    first = torch.ones_like(anchor, dtype=torch.bool)
    first[..., 1:] = anchor[..., 1:] != anchor[..., :-1]  # (B, H, K) a block's first kept token
    end = (advance * first).cumsum(dim=-1)  # (B, H, K) where the token's block ends once laid out again
    new_anchor = end - advance
    return new_anchor - anchor, new_anchor


def rope_inv_freq(config) -> torch.Tensor:
    """Inverse frequencies (R/2,) the model's text decoder rotates with; R = rotated dims per head."""
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    params = getattr(cfg, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](cfg, None)
        return inv_freq.float()
    base = params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rot_dim = int(head_dim * params.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0)))
    return 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float) / rot_dim))


def rotate(keys: torch.Tensor, delta: torch.Tensor | int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate RoPE'd keys by `delta` positions.

    keys: (B, H, T, D) rotated at some positions p; delta: (B, H, T) integer offsets (any sign), or one
    int for every token (a layer's shift), the same on every M-RoPE axis;
    returns keys as if they had been rotated at p + delta, in the keys' dtype (math in float32).
    Only the first 2 * len(inv_freq) dims rotate (partial rotary); the rest pass through.
    Deltas are whole positions and few distinct ones occur after an eviction (the gaps closed so far),
    so cos/sin come from a small table of the deltas' range, looked up with one `index_select` per
    token (a single delta for every token, as a layer's shift, broadcasts its one row), and the two
    rotated halves are written into one output without temporaries.
    """
    half = inv_freq.shape[0]
    if isinstance(delta, int):
        d, lo, hi = None, delta, delta
    else:
        d = delta.to(device=keys.device, dtype=torch.int64).expand(keys.shape[:-1]).reshape(-1)  # (N,) N = B*H*T
        lo, hi = int(d.min()), int(d.max())
    if lo == hi == 0:
        return keys
    small = lo == hi or hi - lo < d.numel()  # the usual case: a table of the deltas' range, then a lookup per token
    steps = torch.arange(lo, hi + 1, device=keys.device) if small else d
    angles = steps.to(torch.float32).unsqueeze(-1) * inv_freq.to(device=keys.device, dtype=torch.float32)  # (n, R/2)
    table = torch.cat((angles.cos(), angles.sin()), dim=-1)  # (n, R): cos | sin
    if small and lo != hi:
        table = table.index_select(0, d - lo)  # (N, R) per token; one delta for all (a layer's shift): (1, R) broadcasts
    cos, sin = table[:, :half], table[:, half:]
    k = keys.reshape(-1, keys.shape[-1]).float()  # (N, D)
    k1, k2 = k[:, :half], k[:, half:2 * half]
    out = k.clone() if 2 * half < k.shape[-1] else torch.empty_like(k)  # partial rotary: the rest passes through
    torch.mul(k1, cos, out=out[:, :half]).addcmul_(k2, sin, value=-1)
    torch.mul(k2, cos, out=out[:, half:2 * half]).addcmul_(k1, sin)
    return out.view(keys.shape).to(keys.dtype)
