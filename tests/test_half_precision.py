"""The cache in bfloat16 on the CPU: what a GPU runs by default (`resolve_dtype`). Every evicting policy keeps its
tensors in bfloat16, stays in its budget and keeps (nearly) the tokens the float32 cache keeps, and a bfloat16 model
answers through it. On a GPU machine `STREAMER_TEST_DEVICE=cuda` runs the same there (bench/device_check.sh)."""

import os

import pytest
import torch

from conftest import VARIANTS, stream_frames, tiny_config, window
from streamer.kv_window import KVWindowCache, WindowConfig

EVICTING_VARIANTS = [v for v in VARIANTS if v[0] != "full"]
DEVICE = os.environ.get("STREAMER_TEST_DEVICE", "cpu")


@pytest.mark.parametrize("policy,merge", EVICTING_VARIANTS)
def test_the_cache_stays_bfloat16_and_keeps_what_float32_keeps(policy, merge):
    config = tiny_config(head_dim=16)
    caches = {dtype: KVWindowCache(config, window(policy, merge, budget=48)) for dtype in (torch.float32, torch.bfloat16)}
    for dtype, cache in caches.items():
        stream_frames(cache, torch.Generator().manual_seed(0), dtype=dtype, device=DEVICE)
    for full, half in zip(caches[torch.float32].layers, caches[torch.bfloat16].layers, strict=True):
        assert half.keys.dtype == half.values.dtype == torch.bfloat16
        assert half.keys.shape == full.keys.shape and half.keys.shape[2] <= 48
        assert bool(torch.isfinite(half.keys.float()).all() and torch.isfinite(half.values.float()).all())
        kept_full, kept_half = set(full.position[0, 0].tolist()), set(half.position[0, 0].tolist())
        assert len(kept_full & kept_half) >= 0.9 * len(kept_full), (sorted(kept_full - kept_half), policy, merge)
        same = [i for i, p in enumerate(half.position[0, 0].tolist()) if p in kept_full]
        at = {p: i for i, p in enumerate(full.position[0, 0].tolist())}
        rows = torch.tensor([at[half.position[0, 0, i].item()] for i in same], device=DEVICE)
        if merge == "none":  # merged pairs are weighted means: a token merged into another in one cache only moves
            for got, want in ((half.keys, full.keys), (half.values, full.values)):
                torch.testing.assert_close(got[0, 0, same].float(), want[0, 0, rows], atol=0.05, rtol=0.02)


def test_a_bfloat16_model_answers_through_the_bounded_cache():
    from conftest import world_chunks
    from streamer.models.registry import load_model
    from streamer.session import StreamSession

    _, chunks = world_chunks(12, 4)
    answers = {}
    for dtype in ("float32", "bfloat16"):
        session = StreamSession(load_model("tiny-random", device=DEVICE, dtype=dtype),
                                WindowConfig(policy="combined", budget=160, merge="weighted"))
        for chunk in chunks:
            session.ingest(chunk)
        assert session.cache.layers[0].keys.dtype == getattr(torch, dtype)
        assert session.cache.get_seq_length() <= 160 and session.stats()["evicted"] > 0
        answers[dtype] = session.answer("What is on screen?", 6)
    assert answers["bfloat16"] and answers["float32"]
