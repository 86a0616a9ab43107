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
Not here: model forward passes, GPU timings, answer quality (see the evaluation scripts).

Run:  .venv/bin/python bench/bench_kv.py            (full, about 3 minutes on 2 idle cores)
      .venv/bin/python bench/bench_kv.py --quick    (fewer budgets and repeats, about a minute;
                                                     writes kv_quick.json / kv_compress_quick.png)
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed: we only write PNG files
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig  # noqa: E402

# Let `python bench/bench_kv.py` import the package from the repository root without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402  (bench/common.py: this script's folder is on sys.path)
from streamer.kv_scoring import observed_attention  # noqa: E402
from streamer.kv_window import KVWindowCache, WindowConfig  # noqa: E402
from streamer.vocab import Modality

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
IMAGE_EVERY = 4  # in the single-layer runs, 3 of every 4 chunks are image tokens, 1 is text


def smollm2_135m_config() -> LlamaConfig:
    """SmolLM2-135M's shapes; max_position_embeddings raised to 16384 so budgets up to 8192 are allowed."""
    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=16384,
        rope_theta=100000.0,
    )


class RandomStream:
    """Appends random KV chunks the way a model does: for each layer `update`, then `observe`.

    Keys/values are (1, kv_heads, n, head_dim), queries (1, q_heads, n, head_dim), float32.
    """

    def __init__(self, cache: KVWindowCache, config: LlamaConfig, seed: int = 0):
        self.cache = cache
        self.kv_heads = config.num_key_value_heads
        self.q_heads = config.num_attention_heads
        self.dim = config.head_dim
        self.scaling = self.dim**-0.5
        self.gen = torch.Generator().manual_seed(seed)

    def kv(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.randn(1, self.kv_heads, n, self.dim, generator=self.gen)  # (B, H, T, D)
        v = torch.randn(1, self.kv_heads, n, self.dim, generator=self.gen)  # (B, H, T, D)
        return k, v

    def query(self, n: int) -> torch.Tensor:
        return torch.randn(1, self.q_heads, n, self.dim, generator=self.gen)  # (B, Hq, Q, D)

    def append(self, n: int, modality: Modality, video_time: float | None) -> None:
        """One forward pass of n tokens through every layer of the cache."""
        times = None if video_time is None else torch.full((n,), video_time)
        self.cache.tag(torch.full((n,), int(modality)), times)
        for layer_idx, layer in enumerate(self.cache.layers):
            k, v = self.kv(n)
            self.cache.update(k, v, layer_idx)
            layer.observe(self.query(min(n, self.cache.cfg.obs_window)), self.scaling)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def summary(samples: list[float]) -> dict:
    return {
        "median_ms": median_ms(samples),
        "min_ms": min(samples) * 1e3,
        "max_ms": max(samples) * 1e3,
    }


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
        if self.window.rules.scored:  # what observe() does before compressing
            layer.score += observed_attention(q, layer.keys, stream.scaling, self.window.obs_window)
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
        scored = self.window.rules.scored
        score_ms = median_ms(self.score_s) if scored else 0.0
        compress_ms = median_ms(self.compress_s)
        return {
            "policy": self.window.policy,
            "merge": self.window.merge,
            "evict_per": self.evict_per,
            "budget": self.budget,
            "chunk": self.chunk,
            "repeats": len(self.compress_s),
            "scored": scored,
            "score": summary(self.score_s) if scored else None,
            "compress": summary(self.compress_s),
            "update": summary(self.update_s),
            "score_wall": summary(self.score_wall_s) if scored else None,
            "compress_wall": summary(self.compress_wall_s),
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
        "policy": window.policy,
        "merge": window.merge,
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


def machine_info() -> dict:
    """The machine facts every benchmark records (`common.machine`), plus the transformers version."""
    return {**common.machine(), "transformers": transformers.__version__}


def plot_compress(rows: list[dict], budgets: list[int], path: Path) -> None:
    """Compress ms against budget, one line per policy, one panel per chunk size, log-log."""
    fig, axes = plt.subplots(1, len(CHUNKS), figsize=(5 * len(CHUNKS), 4.2), sharey=True)
    for ax, chunk in zip(axes, CHUNKS):
        for label, policy, merge in VARIANTS:
            pts = [r for r in rows if r["label"] == label and r["chunk"] == chunk]
            pts.sort(key=lambda r: r["budget"])
            ax.plot([r["budget"] for r in pts], [r["compress_ms"] for r in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.set_xlabel("budget (tokens per layer)")
        ax.set_title(f"chunk {chunk} tokens")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("compress() of one layer, median CPU ms")
    axes[-1].legend(fontsize=8)
    fig.suptitle("Bounded KV cache: one-layer compression cost (SmolLM2-135M shapes, float32, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_tables(result: dict) -> None:
    budgets = result["settings"]["budgets"]
    rows = result["compress"]
    width = 18

    for chunk in CHUNKS:
        print(f"\ncompress CPU ms (one layer, median), chunk {chunk}")
        print("policy".ljust(width) + "".join(f"{b:>9}" for b in budgets))
        for label, _, _ in VARIANTS:
            vals = {r["budget"]: r for r in rows if r["label"] == label and r["chunk"] == chunk}
            print(label.ljust(width) + "".join(f"{vals[b]['compress_ms']:9.3f}" for b in budgets))

    print("\nscoring CPU ms (observed_attention, one layer, median); same function for every scored policy")
    print("chunk".ljust(width) + "".join(f"{b:>9}" for b in budgets))
    for chunk in CHUNKS:
        vals = {r["budget"]: r for r in rows if r["label"] == "combined/pivot" and r["chunk"] == chunk}
        print(str(chunk).ljust(width) + "".join(f"{vals[b]['score_ms']:9.3f}" for b in budgets))

    print("\nper appended token CPU ms, (scoring + compress) / chunk, combined/pivot")
    print("chunk".ljust(width) + "".join(f"{b:>9}" for b in budgets))
    for chunk in CHUNKS:
        vals = {r["budget"]: r for r in rows if r["label"] == "combined/pivot" and r["chunk"] == chunk}
        print(str(chunk).ljust(width) + "".join(f"{vals[b]['per_token_ms']:9.4f}" for b in budgets))

    print(f"\nper-head vs per-layer eviction, compress CPU ms, chunk {EVICT_PER_CHUNK}")
    print("policy".ljust(width) + "budget".rjust(8) + "head".rjust(9) + "layer".rjust(9) + "layer/head".rjust(11))
    for r in result["evict_per"]:
        print(
            r["label"].ljust(width)
            + f"{r['budget']:8d}{r['head_ms']:9.3f}{r['layer_ms']:9.3f}{r['layer_over_head']:11.2f}"
        )

    print("\nmemory of the 30-layer cache after 3x budget tokens (combined/pivot, per head)")
    print(
        "budget".rjust(7) + "stream".rjust(8) + "kv_MiB".rjust(10) + "theory_MiB".rjust(12) + "ratio".rjust(8)
        + "meta_B/layer".rjust(14) + "meta/kv".rjust(9)
    )
    for m in result["memory"]:
        print(
            f"{m['budget']:7d}{m['stream_tokens']:8d}{m['kv_bytes'] / 2**20:10.2f}{m['budget_bytes'] / 2**20:12.2f}"
            f"{m['ratio']:8.3f}{m['metadata_bytes_per_layer']['total']:14d}{m['metadata_over_kv']:9.2%}"
        )


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
    plot_compress(compress_rows, budgets, png_path)

    print_tables(result)
    print(f"\nwrote {json_path} and {png_path} in {result['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
