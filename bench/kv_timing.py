"""Timing one layer of the bounded KV cache: `OneLayerBench` (one point: policy, merge, budget, chunk size,
per-head or per-layer eviction) and `run_round_robin` (every point once per round).

A point is layer 0 of a cache filled to its budget; each `step` appends one chunk (every 4th is text,
the others image) and times the append, the scoring (`observed_attention` of the chunk's queries, what
`observe` does before compressing) and `compress()` alone, in CPU time of the process and in wall time.
Used by bench_kv.py. Deliberately not here: which points are timed, memory, tables and plots.
"""

from __future__ import annotations

import math
import time

import torch

import common  # bench/common.py (this folder is on sys.path)
from kv_stream import RandomStream
from streamer.kv_scoring import observed_attention
from streamer.kv_window import KVWindowCache, WindowConfig
from streamer.shared_types import Modality

IMAGE_EVERY = 4  # in the single-layer runs, 3 of every 4 chunks are image tokens, 1 is text


class OneLayerBench:
    """Layer 0 of a cache filled to its budget; `step()` appends one chunk and times its three phases."""

    def __init__(self, config, policy, merge, budget, chunk, evict_per, seed=0):
        self.window = WindowConfig(policy=policy, budget=budget, merge=merge, evict_per=evict_per)
        self.cache = KVWindowCache(config, self.window)
        self.layer = self.cache.layers[0]
        self.stream = RandomStream(self.cache, config, seed=seed)
        self.budget, self.chunk, self.evict_per = budget, chunk, evict_per
        self.update_s, self.score_s, self.compress_s = [], [], []  # CPU seconds of this process
        self.score_wall_s, self.compress_wall_s = [], []  # wall-clock seconds

        # Fill to exactly `budget` tokens: blocks of 64 image tokens with every 4th block text.
        block = torch.arange(budget) // 64
        is_image = (block % IMAGE_EVERY) != IMAGE_EVERY - 1
        modality = torch.where(is_image, int(Modality.IMAGE), int(Modality.TEXT))
        times = torch.where(is_image, block.float(), torch.tensor(math.nan))
        self.cache.tag(modality, times)
        k, v = self.stream.kv(budget)
        self.cache.update(k, v, 0)
        self.layer.observe(self.stream.query(self.window.obs_window), self.stream.scaling)  # non-zero scores
        if self.layer.get_seq_length() != budget:
            raise RuntimeError(f"filled layer holds {self.layer.get_seq_length()} tokens, expected {budget}")

    def step(self, i: int, record: bool) -> None:
        """Append chunk number i (every 4th is text, the others image); time update, scoring, compress."""
        chunk, layer, stream = self.chunk, self.layer, self.stream
        if i % IMAGE_EVERY == IMAGE_EVERY - 1:
            self.cache.tag(torch.full((chunk,), int(Modality.TEXT)))
        else:
            self.cache.tag(torch.full((chunk,), int(Modality.IMAGE)), torch.full((chunk,), float(1000 + i)))
        k, v = stream.kv(chunk)
        q = stream.query(chunk)

        c0 = time.process_time()
        self.cache.update(k, v, 0)
        w1, c1 = time.perf_counter(), time.process_time()
        if layer.observing:  # what observe() does before compressing
            layer._accumulate("chunk", observed_attention(q, layer.keys, stream.scaling, self.window.obs_window))
        w2, c2 = time.perf_counter(), time.process_time()
        layer.compress()
        w3, c3 = time.perf_counter(), time.process_time()

        if layer.get_seq_length() != self.budget:
            raise RuntimeError(f"layer holds {layer.get_seq_length()} tokens after compress, budget {self.budget}")
        if record:
            self.update_s.append(c1 - c0)
            self.score_s.append(c2 - c1)
            self.compress_s.append(c3 - c2)
            self.score_wall_s.append(w2 - w1)
            self.compress_wall_s.append(w3 - w2)

    def result(self) -> dict:
        """Medians (and min, max, mean, n) of the recorded samples in ms; per-token cost of scoring + compress."""
        scored = bool(self.window.resolved.composition.observes("chunk"))
        score = common.summary(self.score_s) if scored else None
        compress = common.summary(self.compress_s)
        score_ms = score["median_ms"] if scored else 0.0
        compress_ms = compress["median_ms"]
        return {
            "policy": self.window.resolved.policy,
            "merge": self.window.resolved.merge,
            "evict_per": self.evict_per,
            "budget": self.budget,
            "chunk": self.chunk,
            "repeats": len(self.compress_s),
            "scored": scored,
            "score": score,
            "compress": compress,
            "update": common.summary(self.update_s),
            "score_wall": common.summary(self.score_wall_s) if scored else None,
            "compress_wall": common.summary(self.compress_wall_s),
            "score_ms": score_ms,
            "compress_ms": compress_ms,
            "per_token_ms": (score_ms + compress_ms) / self.chunk,
        }


def run_round_robin(benches: list[OneLayerBench], repeats: int, warmup: int) -> None:
    """Step every bench once per round, warmup + repeats rounds.

    A burst of other work on the machine then spoils one sample of many points (the median drops it)
    instead of every sample of one point; and each layer is timed after the others have run, with cold
    CPU caches, as it is in a model's forward pass.
    """
    for i in range(warmup + repeats):
        for bench in benches:
            bench.step(i, record=i >= warmup)
