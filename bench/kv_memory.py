"""Memory of a full 30-layer bounded KV cache after a stream of mixed image and text chunks.

`measure_memory` streams 3x budget tokens (frames and, after every second frame, a question or an answer)
through a combined/pivot cache and compares its real KV bytes with the budget's theoretical bytes;
`metadata_bytes` is what one layer's bookkeeping tensors cost on top. Used by bench_kv.py.
Deliberately not here: timing of compression (kv_timing.py), tables and plots (kv_report.py).
"""

from __future__ import annotations

import time

from kv_stream import RandomStream
from streamer.kv_window import KVWindowCache, WindowConfig
from streamer.shared_types import Modality


def metadata_bytes(layer) -> dict:
    """Bytes of one layer's bookkeeping tensors, from their .nbytes."""
    parts = {name: getattr(layer, name).nbytes for name in ("score", "weight", "modality", "times", "position")}
    parts["total"] = sum(parts.values())
    return parts


def measure_memory(config, budget: int, seed: int = 0) -> dict:
    """Stream 3x budget tokens of frames and text through a full 30-layer combined/pivot cache."""
    window = WindowConfig(policy="combined", budget=budget)
    cache = KVWindowCache(config, window)
    stream = RandomStream(cache, config, seed=seed)
    frame_tokens = max(64, budget // 8)  # bigger frames at bigger budgets keep the run short
    text_tokens = 16
    target = 3 * budget

    start = time.perf_counter()
    stream.append(text_tokens, Modality.TEXT, None)  # a system prompt
    seen, frame = text_tokens, 0
    while seen < target:
        stream.append(frame_tokens, Modality.IMAGE, float(frame))
        seen += frame_tokens
        frame += 1
        if frame % 2 == 0:  # a question or an answer after every second frame
            stream.append(text_tokens, Modality.TEXT, None)
            seen += text_tokens
    elapsed = time.perf_counter() - start

    stats = cache.stats()
    if stats["seen_tokens"] != seen:
        raise RuntimeError(f"cache saw {stats['seen_tokens']} tokens, stream sent {seen}")
    ratio = stats["kv_bytes"] / stats["budget_bytes"]
    meta = metadata_bytes(cache.layers[0])
    kv_per_layer = cache.layers[0].keys.nbytes + cache.layers[0].values.nbytes
    return {
        "policy": window.resolved.policy,
        "merge": window.resolved.merge,
        "evict_per": window.evict_per,
        "budget": budget,
        "stream_tokens": seen,
        "frame_tokens": frame_tokens,
        "text_tokens": text_tokens,
        "frames": frame,
        "stream_seconds": elapsed,
        "tokens_per_layer": sorted(set(stats["tokens_per_layer"])),
        "kept_by_modality": stats["kept_by_modality"],
        "kv_bytes": stats["kv_bytes"],
        "budget_bytes": stats["budget_bytes"],
        "ratio": ratio,
        "within_5pct": abs(ratio - 1.0) <= 0.05,
        "kv_bytes_per_layer": kv_per_layer,
        "metadata_bytes_per_layer": meta,
        "metadata_bytes_all_layers": meta["total"] * cache.n_layers,
        "metadata_over_kv": meta["total"] / kv_per_layer,
    }
