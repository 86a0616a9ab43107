"""Needle in a video haystack with the built-in trained model `tiny`: accuracy by depth x budget x policy.

The `objects` videos of the quality suite (`bench/quality.py`: five objects, each on screen 2-4 s at a
random time, on a scene with a drifting ball; 1 fps; chunks of 4 frames), each streamed into a
`StreamSession` once per configuration with the suite's `watch_and_ask`:

- **5 minutes** (`--seconds`, quick: 1 minute): the full cache is the reference (300 frames, about
  7,500 tokens, inside the model's 8,192 positions); each bounded policy runs at 10%, 20% and 50% of
  the tokens the full stream takes.
- **1 hour** (`--long-seconds`, full run only): only bounded policies survive. The full cache is fed
  too and stops with a `BudgetError` where it would pass the model's positions (the JSON says where);
  each bounded policy keeps the same token budget as 10% of the 5-minute stream.

After the stream, for every object (a "needle" at depth = its first sampled time / video length) the
session is asked the world's `needle_digit` question ("What digit was on the red square?") from a copy
of the cache; exact match, and `kept` says how much of the object the cache still held. Accuracy per depth
bin is drawn as heatmaps (depth x budget, one per policy). The model runs in its default dtype (float32 on
CPU). For accuracy with confidence intervals over many videos use `quality.py --tasks objects`.

The script needs `load_model("tiny")` (trained weights in models/weights/); when it cannot load, it
writes bench/results/needle[_quick].json with "available": false and the reason, and no plot.

    .venv/bin/python bench/bench_needle.py --quick     # one 1-minute video, 10% budgets, no hour
    .venv/bin/python bench/bench_needle.py             # two 5-minute videos + one hour
"""

import argparse

import common
from common import POLICIES
from quality import SEEDS, make_video, watch_and_ask, weights_id


def run(adapter, video, window, seconds: float) -> tuple[list[dict], float | None, float, object]:
    """Stream `video` into a new session under `window` and ask its needle questions (each from a copy of
    the cache). Returns (rows, video time where the positions ran out or None, seconds spent ingesting, session)."""
    from streamer.session import StreamSession

    session = StreamSession(adapter, window, skip=None)  # every sampled frame: what the cache alone keeps
    rows, stopped = watch_and_ask(session, video)
    return rows, stopped, session.ingest_seconds, session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fractions", type=float, nargs="*", default=None, help="budgets as fractions (default 0.1 0.2 0.5)")
    ap.add_argument("--seconds", type=int, default=None, help="reference video length (default 300, quick 60)")
    ap.add_argument("--long-seconds", type=int, default=None, help="long video, bounded only (default 3600, quick 0)")
    ap.add_argument("--long-policies", nargs="*", default=None, help="policies for the long video (default all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    common.setup(args.threads)
    started = common.machine()
    name = "needle_quick" if args.quick else "needle"
    fractions = args.fractions or ([0.1] if args.quick else [0.1, 0.2, 0.5])
    seconds = args.seconds or (60 if args.quick else 300)
    long_seconds = args.long_seconds if args.long_seconds is not None else (0 if args.quick else 3600)
    videos, bins = (1 if args.quick else 2), 3
    try:
        from streamer.models.registry import load_model

        adapter = load_model("tiny")
    except Exception as err:  # weights missing, ...: record it instead of failing run_all
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        print(f"tiny is not available: {reason}")
        common.write_json(name, {"available": False, "reason": reason}, started)
        return

    results = []  # {video, seed, policy, fraction, budget, depth, correct, got, kept, ...}
    budget_10 = None
    for i in range(videos):
        video = make_video("objects", i, seconds)
        full_tokens = None
        for policy, frac in [("full", None)] + [(p, f) for f in fractions for p in POLICIES]:
            budget = None if frac is None else max(64, int(full_tokens * frac))
            rows, stopped, ingest_s, session = run(adapter, video, common.window(policy, budget), seconds)
            if full_tokens is None:
                full_tokens = session.cache.get_seq_length()
                budget_10 = budget_10 or max(64, int(full_tokens * 0.1))
            results += [{"video": "reference", "policy": policy, "fraction": frac, "budget": budget, **r} for r in rows]
            print(f"{seconds} s seed {video.seed} {policy:12s} {frac or 1:.0%} acc "
                  f"{sum(r['correct'] for r in rows)}/{len(rows)} ({ingest_s:.0f} s ingest)", flush=True)

    long_info = {}
    if long_seconds:
        video = make_video("objects", 100, long_seconds)
        for policy in ["full"] + (args.long_policies or POLICIES):
            window = common.window(policy, None if policy == "full" else budget_10)
            rows, stopped, ingest_s, session = run(adapter, video, window, long_seconds)
            long_info[policy] = {"stopped_at_s": stopped, "ingest_s": round(ingest_s, 1), "kv_bytes": session.cache.kv_bytes()}
            if stopped is not None:
                print(f"{long_seconds} s {policy}: stopped at {stopped:.0f} s ({ingest_s:.0f} s ingest)", flush=True)
                continue
            results += [{"video": "long", "policy": policy, "fraction": None, "budget": budget_10, **r} for r in rows]
            print(f"{long_seconds} s {policy:12s} budget {budget_10} acc {sum(r['correct'] for r in rows)}/{len(rows)} "
                  f"({ingest_s:.0f} s ingest)", flush=True)

    edges = [i / bins for i in range(bins + 1)]

    def cell(policy, frac, b, video):
        return _mean([r["correct"] for r in results if r["video"] == video and r["policy"] == policy
                      and r["fraction"] == frac and edges[b] <= r["depth"] < edges[b + 1] + (b == bins - 1)])

    grid = {policy: [[cell(policy, f, b, "reference") for f in ([None] if policy == "full" else fractions)]
                     for b in range(bins)] for policy in ["full"] + POLICIES}
    long_grid = {policy: [[cell(policy, None, b, "long")] for b in range(bins)] for policy in long_info if policy != "full"}
    common.write_json(name, {"available": True, "settings": {
        "model": f"tiny ({str(adapter.dtype).removeprefix('torch.')})", "weights_sha256_16": weights_id("tiny"),
        "video_seconds": seconds, "seeds": [SEEDS["objects"] + i for i in range(videos)],
        "fractions": fractions, "depth_bins": edges, "frame_size": 192, "fps": 1, "long_seconds": long_seconds,
        "long_budget": budget_10 if long_seconds else None},
        "accuracy_grid": grid, "long": long_info, "long_accuracy_grid": long_grid, "results": results}, started)
    plot(grid, fractions, edges, name, long_grid, long_seconds)


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def plot(grid, fractions, edges, name, long_grid=None, long_seconds=0) -> None:
    plt = common.plt()
    panels = list(grid.items()) + [(f"{p}, {long_seconds // 60} min", rows) for p, rows in (long_grid or {}).items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1, 3.6))
    for ax, (policy, rows) in zip(axes, panels):
        data = [[float("nan") if v is None else v for v in row] for row in rows]
        im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        cols = ["full"] if policy == "full" else ["10%"] if "min" in policy else [f"{f:.0%}" for f in fractions]
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), [f"{edges[i]:.1f}-{edges[i + 1]:.1f}" for i in range(len(rows))])
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, "-" if v != v else f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.set(title=policy, xlabel="budget", ylabel="needle depth" if policy == "full" else "")
    fig.colorbar(im, ax=axes[-1])
    common.save_fig(fig, name)


if __name__ == "__main__":
    main()
