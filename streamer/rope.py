"""Re-rotation of cached keys to new RoPE positions (1-D RoPE).

Keys enter the cache already rotated at the position the model gave them. When the cache drops tokens
it closes the gaps: every kept key moves to a contiguous position, which RoPE makes a pure rotation by
the position delta, `rotate(k_at_p, d) == k_at_(p+d)`. The frequencies come from the model's own RoPE
settings (`rope_parameters`, including the scaled types `linear`, `dynamic`, `yarn`, `llama3`,
`longrope`) through transformers' `ROPE_INIT_FUNCTIONS`, so what we rotate by is what the model used.

Not here: 3-D M-RoPE (Qwen2-VL). It needs a (3, ...) position per token and a delta per rotary
section; `rotate` would take per-section deltas, nothing else in the cache would change.
"""

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


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


def rotate(keys: torch.Tensor, delta: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate RoPE'd keys by `delta` positions.

    keys: (B, H, T, D) rotated at some positions p; delta: (B, H, T) integer offsets (any sign);
    returns keys as if they had been rotated at p + delta, in the keys' dtype (math in float32).
    Only the first 2 * len(inv_freq) dims rotate (partial rotary); the rest pass through.
    Deltas are whole positions and few distinct ones occur after an eviction (the gaps closed so far),
    so cos/sin come from a small table of the deltas' range instead of one evaluation per element.
    """
    half = inv_freq.shape[0]
    d = delta.to(device=keys.device, dtype=torch.int64)
    lo, hi = int(d.min()), int(d.max())
    if lo == hi == 0:
        return keys
    freq = inv_freq.to(device=keys.device, dtype=torch.float32)
    if hi - lo < d.numel():  # the usual case: a table of the range, then a lookup per element
        table = torch.arange(lo, hi + 1, device=keys.device, dtype=torch.float32).unsqueeze(-1) * freq  # (n, R/2)
        cos, sin = table.cos()[d - lo], table.sin()[d - lo]  # (B, H, T, R/2)
    else:
        angles = d.to(torch.float32).unsqueeze(-1) * freq  # (B, H, T, R/2)
        cos, sin = angles.cos(), angles.sin()
    k1, k2 = keys[..., :half].float(), keys[..., half : 2 * half].float()
    out = torch.cat((k1 * cos - k2 * sin, k2 * cos + k1 * sin), dim=-1).to(keys.dtype)  # (B, H, T, R)
    if 2 * half == keys.shape[-1]:
        return out
    return torch.cat((out, keys[..., 2 * half :]), dim=-1)
