"""The tokens each named policy keeps on a fixed random stream: written once from the cache before the
composable scorers (cache v2), read by tests/test_kv_policies.py to show the refactor keeps the same tokens.

    .venv/bin/python tests/kv_golden.py   # rewrites tests/data/kv_golden.json (only when behaviour is meant to change)
"""

import json
import math
from pathlib import Path

import torch
from transformers import LlamaConfig

from streamer.kv_window import KVWindowCache, WindowConfig
from streamer.shared_types import Modality

GOLDEN = Path(__file__).with_name("data") / "kv_golden.json"
POLICIES = ["sink-recent", "saddle", "text-prior", "combined"]
CASES = {f"{p}/{variant}": (p, kw) for p in POLICIES for variant, kw in
         {"default": {}, "layer": {"evict_per": "layer"}, "tensor": {"compiled": False},
          "elite": {"obs_select": "elite"}, "adaptive": {"layer_budget": "adaptive"}}.items()}


def stream(policy: str, **kw) -> dict:
    """Feed 40 chunks of text and frames (some frames repeat) into a 3-layer cache of budget 64; return the
    stream positions every layer and head keeps, and a checksum of the kept keys and values."""
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    cache = KVWindowCache(cfg, WindowConfig(policy=policy, budget=64, n_sink=4, recent=8, **kw))
    gen = torch.Generator().manual_seed(7)
    frame = torch.randn(1, 2, 9, 16, generator=gen)
    for step in range(40):
        if step % 3 == 0:  # text
            n, mod, times = 5, torch.full((5,), int(Modality.TEXT)), None
        else:  # one frame: timestamp text + 9 image tokens; every other frame repeats the last one (plus noise)
            n = 10
            mod = torch.tensor([int(Modality.TEXT)] + [int(Modality.IMAGE)] * 9)
            times = torch.full((10,), float(step))
            if step % 2:
                frame = torch.randn(1, 2, 9, 16, generator=gen)
        cache.tag(mod, times)
        for i, layer in enumerate(cache.layers):
            k = torch.randn(1, 2, n, 16, generator=gen)
            v = torch.randn(1, 2, n, 16, generator=gen)
            if n == 10:
                v[:, :, 1:] = frame + 0.01 * torch.randn(1, 2, 9, 16, generator=gen)
            cache.update(k, v, i)
            layer.observe(torch.randn(1, 4, n, 16, generator=gen), 0.25)
    return {"positions": [l.position[0].tolist() for l in cache.layers],
            "keys": [float(l.keys.double().sum()) for l in cache.layers],
            "values": [float(l.values.double().sum()) for l in cache.layers]}


def main() -> None:
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({name: stream(p, **kw) for name, (p, kw) in CASES.items()}))
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
