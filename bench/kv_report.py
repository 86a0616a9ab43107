"""What bench_kv.py shows of its results: the compression plot (`plot_compress`) and the printed tables
(`print_tables`), both read from the result rows (budgets, chunk sizes and policy labels as they were run).

Deliberately not here: measuring (kv_timing.py, kv_memory.py), the JSON (bench_kv.py).
"""

from __future__ import annotations

from pathlib import Path

import common  # bench/common.py (this folder is on sys.path)


def _grid(rows: list[dict]) -> tuple[list[int], list[int], list[str]]:
    """(budgets, chunk sizes, policy labels) of the compress rows, in the order they were run."""
    budgets = sorted({r["budget"] for r in rows})
    return budgets, list(dict.fromkeys(r["chunk"] for r in rows)), list(dict.fromkeys(r["label"] for r in rows))


def plot_compress(rows: list[dict], path: Path) -> None:
    """Compress ms against budget, one line per policy, one panel per chunk size, log-log."""
    plt = common.plt()
    budgets, chunks, labels = _grid(rows)
    fig, axes = plt.subplots(1, len(chunks), figsize=(5 * len(chunks), 4.2), sharey=True)
    for ax, chunk in zip(axes, chunks):
        for label in labels:
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
    """The compress, scoring and per-token tables of part 1, per-head against per-layer (part 2), memory (part 3)."""
    rows = result["compress"]
    budgets, chunks, labels = _grid(rows)
    width = 18

    for chunk in chunks:
        print(f"\ncompress CPU ms (one layer, median), chunk {chunk}")
        print("policy".ljust(width) + "".join(f"{b:>9}" for b in budgets))
        for label in labels:
            vals = {r["budget"]: r for r in rows if r["label"] == label and r["chunk"] == chunk}
            print(label.ljust(width) + "".join(f"{vals[b]['compress_ms']:9.3f}" for b in budgets))

    print("\nscoring CPU ms (observed_attention, one layer, median); same function for every scored policy")
    print("chunk".ljust(width) + "".join(f"{b:>9}" for b in budgets))
    for chunk in chunks:
        vals = {r["budget"]: r for r in rows if r["label"] == "combined/pivot" and r["chunk"] == chunk}
        print(str(chunk).ljust(width) + "".join(f"{vals[b]['score_ms']:9.3f}" for b in budgets))

    print("\nper appended token CPU ms, (scoring + compress) / chunk, combined/pivot")
    print("chunk".ljust(width) + "".join(f"{b:>9}" for b in budgets))
    for chunk in chunks:
        vals = {r["budget"]: r for r in rows if r["label"] == "combined/pivot" and r["chunk"] == chunk}
        print(str(chunk).ljust(width) + "".join(f"{vals[b]['per_token_ms']:9.4f}" for b in budgets))

    print(f"\nper-head vs per-layer eviction, compress CPU ms, chunk {result['evict_per'][0]['chunk']}")
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
