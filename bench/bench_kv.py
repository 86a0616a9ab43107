"""Benchmark of the bounded KV cache (`streamer/kv_window.py`) on random tensors, CPU.

Shapes are SmolLM2-135M's text decoder (30 layers, 9 query heads, 3 KV heads, head_dim 64, float32),
the language model of SmolVLM-256M. Three measurements:

1. Cost of one compression of ONE layer against budget and chunk size, per policy. The layer is first
   filled to its budget, then a chunk is appended (`update`) again and again; each time we time
   (a) the scoring, `observed_attention` of the chunk's last `obs_window` queries (what `observe` does
   before compressing), and (b) `layer.compress()` alone (gather, merge, re-rotate, bookkeeping).
   Per-token cost = (scoring + compress) / chunk size.
2. Per-head against per-layer eviction (`evict_per="head"` / `"layer"`), compress cost at each budget.
3. Memory of a full 30-layer cache after a stream of mixed image/text chunks (3x budget tokens): real
   KV bytes against the theoretical budget x layers x kv_heads x head_dim x 2 x bytes per element, and
   the bookkeeping tensors each layer carries on top (score, weight, modality, times, position).

Timings are medians of repeated runs after warm-up; minimum and maximum are kept in the JSON. The
headline figures are CPU time of the process (`time.process_time`) with one torch thread by default, the
cost of the work itself on one core; on a machine shared with other jobs wall time mostly measures
waiting for a core (wall-clock medians are in the JSON too, and the load average). All points of parts
1 and 2 are timed round-robin (one sample of every point per round), so a burst of other work spoils
one sample of many points, which the median drops, instead of every sample of one point.
Not here: model forward passes, GPU timings, answer quality (see the evaluation scripts). This file holds
the grid of points and the command line; the pieces are in kv_stream.py (random KV with SmolLM2-135M's
shapes), kv_timing.py (one layer's timing, round-robin), kv_memory.py (the 30-layer memory measurement)
and kv_report.py (tables and the plot).

Run:  .venv/bin/python bench/bench_kv.py            (full, about 3 minutes on 2 idle cores)
      .venv/bin/python bench/bench_kv.py --quick    (fewer budgets and repeats, about a minute;
                                                     writes kv_quick.json / kv_compress_quick.png)
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import transformers

import common  # bench/common.py (this script's folder is on sys.path); it puts the repository root there too
from kv_memory import measure_memory
from kv_report import plot_compress, print_tables
from kv_stream import smollm2_135m_config
from kv_timing import OneLayerBench, run_round_robin
from streamer.kv_window import WindowConfig

FULL_BUDGETS = [256, 512, 1024, 2048, 4096, 8192]
QUICK_BUDGETS = [256, 1024, 2048]
CHUNKS = [16, 64, 256]
# (label, policy, merge); merge None = the policy's default
VARIANTS = [
    ("sink-recent", "sink-recent", None),
    ("saddle", "saddle", None),
    ("text-prior/pivot", "text-prior", "pivot"),
    ("combined/pivot", "combined", "pivot"),
    ("combined/none", "combined", "none"),
]
EVICT_PER_VARIANTS = [("combined/pivot", "combined", "pivot"), ("saddle", "saddle", None)]
EVICT_PER_CHUNK = 64


def machine_info() -> dict:
    """The machine facts every benchmark records (`common.machine`), plus the transformers version."""
    return {**common.machine(), "transformers": transformers.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="budgets 256/1024/2048 and 3 repeats (about a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per point (default 21, quick 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed appends before timing each point")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: per-core costs that stay stable on a shared machine)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    if args.threads < 1:
        parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    budgets = QUICK_BUDGETS if args.quick else FULL_BUDGETS
    repeats = args.repeats or (3 if args.quick else 21)
    if repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    stem = "kv_quick" if args.quick else "kv"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    config = smollm2_135m_config()
    machine = machine_info()
    start = time.perf_counter()

    # Every point of parts 1 and 2 is a one-layer cache kept alive for the whole run (about 0.5 GB).
    compress_benches, evict_benches = {}, {}
    for budget in budgets:
        for label, policy, merge in VARIANTS:
            for chunk in CHUNKS:
                compress_benches[label, budget, chunk] = OneLayerBench(config, policy, merge, budget, chunk, "head")
        for label, policy, merge in EVICT_PER_VARIANTS:
            for per in ("head", "layer"):
                evict_benches[label, budget, per] = OneLayerBench(config, policy, merge, budget, EVICT_PER_CHUNK, per)
    run_round_robin([*compress_benches.values(), *evict_benches.values()], repeats, args.warmup)
    print(f"[{time.perf_counter() - start:6.1f}s] one-layer timings done", flush=True)

    compress_rows = [{"label": key[0], **bench.result()} for key, bench in compress_benches.items()]
    evict_rows = []
    for label, _, _ in EVICT_PER_VARIANTS:
        for budget in budgets:
            head = evict_benches[label, budget, "head"].result()
            layer = evict_benches[label, budget, "layer"].result()
            evict_rows.append({
                "label": label,
                "policy": head["policy"],
                "merge": head["merge"],
                "budget": budget,
                "chunk": EVICT_PER_CHUNK,
                "head_ms": head["compress_ms"],
                "layer_ms": layer["compress_ms"],
                "layer_over_head": layer["compress_ms"] / head["compress_ms"],
                "head": head["compress"],
                "layer": layer["compress"],
            })

    memory_rows = []
    for budget in budgets:
        memory_rows.append(measure_memory(config, budget))
        print(f"[{time.perf_counter() - start:6.1f}s] memory at budget {budget} done", flush=True)

    result = {
        "benchmark": "bench/bench_kv.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {
            "model_shapes": "SmolLM2-135M: 30 layers, hidden 576, 9 query heads, 3 KV heads, head_dim 64",
            "dtype": "float32",
            "budgets": budgets,
            "chunks": CHUNKS,
            "repeats": repeats,
            "warmup": args.warmup,
            "window_defaults": {
                "n_sink": WindowConfig.n_sink,
                "recent": "budget // 8",
                "obs_window": WindowConfig.obs_window,
                "score_decay": WindowConfig.score_decay,
            },
            "clock": "score/compress/update: CPU time of the process (time.process_time), robust to other "
            "processes on the machine; with one torch thread it equals wall time on an idle machine. "
            "score_wall/compress_wall: wall clock (time.perf_counter)",
            "torch_threads": torch.get_num_threads(),
            "per_token_ms": "(score_ms + compress_ms) / chunk; update_ms (the append itself) is in 'update'",
            "score_ms": "0 for unscored policies (sink-recent): observe() does not score them",
        },
        "compress": compress_rows,
        "evict_per": evict_rows,
        "memory": memory_rows,
        "total_seconds": time.perf_counter() - start,
    }
    json_path = args.out_dir / f"{stem}.json"
    png_path = args.out_dir / f"{stem}_compress.png"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    plot_compress(compress_rows, png_path)

    print_tables(result)
    print(f"\nwrote {json_path} and {png_path} in {result['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
