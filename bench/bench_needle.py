"""Needle in a video haystack with the built-in trained model `tiny`: accuracy by depth x budget x policy.

Two kinds of video from `streamer.world.random_script` (five objects, each on screen 2-4 s at a random
time, on a scene with a drifting ball; 1 fps; chunks of 4 frames), each streamed into a
`StreamSession` once per configuration:

- **5 minutes** (`--seconds`, quick: 1 minute): the full cache is the reference (300 frames, about
  7,500 tokens, inside the model's 8,192 positions); each bounded policy runs at 10%, 20% and 50% of
  the tokens the full stream takes.
- **1 hour** (`--long-seconds`, full run only): only bounded policies survive. The full cache is fed
  too and stops with a `BudgetError` where it would pass the model's positions (the JSON says where);
  each bounded policy keeps the same token budget as 10% of the 5-minute stream.

After the stream, for every object (a "needle" at depth = its first sampled time / video length) the
session is asked the world's `needle_digit` question ("What digit was on the red square?") from a copy
of the cache; an answer is right when it starts with the true digit. Accuracy per depth bin is drawn as
heatmaps (depth x budget, one per policy). The model runs in bfloat16 (about 3x faster on this CPU).

The script needs `load_model("tiny")` (trained weights in models/weights/); when it cannot load, it
writes bench/results/needle[_quick].json with "available": false and the reason, and no plot.

    .venv/bin/python bench/bench_needle.py --quick     # one 1-minute video, 10% budgets, no hour
    .venv/bin/python bench/bench_needle.py             # two 5-minute videos + one hour
"""

import argparse
import copy
import hashlib
import time
from pathlib import Path

import common
from common import POLICIES


SEED = 10_900_000  # world seeds from train.data.HELD_OUT_SEED (10,000,000) on are never trained on


def stream(adapter, script, window) -> tuple[object, float | None, float]:
    """Ingest `script` at 1 fps in chunks of 4 into a new session. Returns (session, video time where a
    BudgetError stopped it or None, wall seconds)."""
    from streamer.errors import BudgetError
    from streamer.frames import SamplerConfig, chunk_frames
    from streamer.session import StreamSession

    session, start = StreamSession(adapter, window), time.perf_counter()
    for chunk in chunk_frames(script.frames(1.0), SamplerConfig(fps=1.0, chunk_frames=4)):
        try:
            session.ingest(chunk)
        except BudgetError:
            return session, chunk.frames[0].time_s, time.perf_counter() - start
    return session, None, time.perf_counter() - start


def ask_needles(session, script, seconds: float) -> list[dict]:
    """Every needle_digit question, each from a copy of the cache after the stream."""
    from streamer.world.scene import video_questions

    events = {e.obj.name: e for e in script.seen_events()}
    snap, conv = copy.deepcopy(session.cache), session.conv
    rows = []
    for qa in (q for q in video_questions(script) if q.kind == "needle_digit"):
        obj = qa.question.removeprefix("What digit was on the ").removesuffix("?")
        session.cache, session.conv = copy.deepcopy(snap), conv
        answer = session.answer(qa.question, max_new_tokens=4).strip().lower()
        rows.append({"depth": script.first_seen(events[obj]) / seconds, "question": qa.question, "truth": qa.answer,
                     "answer": answer, "correct": answer.startswith(qa.answer)})
    return rows


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
    seeds, bins = ([SEED] if args.quick else [SEED, SEED + 1]), 3
    try:
        from streamer.models.registry import load_model

        adapter = load_model("tiny", dtype="bfloat16")
    except Exception as err:  # weights missing, ...: record it instead of failing run_all
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        print(f"tiny is not available: {reason}")
        common.write_json(name, {"available": False, "reason": reason}, started)
        return

    from streamer.world.scene import random_script

    results = []  # {video, seed, policy, fraction, budget, depth, correct, answer, ...}
    budget_10 = None
    for seed in seeds:
        script = random_script(seed, duration_s=seconds, n_events=5, event_s=(2, 4))
        full_tokens = None
        for policy, frac in [("full", None)] + [(p, f) for f in fractions for p in POLICIES]:
            budget = None if frac is None else max(64, int(full_tokens * frac))
            session, stopped, wall = stream(adapter, script, common.window(policy, budget))
            if full_tokens is None:
                full_tokens = session.cache.get_seq_length()
                budget_10 = budget_10 or max(64, int(full_tokens * 0.1))
            rows = ask_needles(session, script, seconds)
            results += [{"video": "reference", "seed": seed, "policy": policy, "fraction": frac, "budget": budget,
                         **r} for r in rows]
            print(f"{seconds} s seed {seed} {policy:12s} {frac or 1:.0%} acc "
                  f"{sum(r['correct'] for r in rows)}/{len(rows)} ({wall:.0f} s)", flush=True)

    long_info = {}
    if long_seconds:
        script = random_script(SEED + 100, duration_s=long_seconds, n_events=5, event_s=(2, 4))
        for policy in ["full"] + (args.long_policies or POLICIES):
            session, stopped, wall = stream(adapter, script, common.window(policy, None if policy == "full" else budget_10))
            long_info[policy] = {"stopped_at_s": stopped, "wall_s": round(wall, 1), "kv_bytes": session.cache.kv_bytes()}
            if stopped is not None:
                print(f"{long_seconds} s {policy}: stopped at {stopped:.0f} s ({wall:.0f} s)", flush=True)
                continue
            rows = ask_needles(session, script, long_seconds)
            results += [{"video": "long", "seed": SEED + 100, "policy": policy, "fraction": None, "budget": budget_10, **r}
                        for r in rows]
            print(f"{long_seconds} s {policy:12s} budget {budget_10} acc {sum(r['correct'] for r in rows)}/{len(rows)} "
                  f"({wall:.0f} s)", flush=True)

    edges = [i / bins for i in range(bins + 1)]

    def cell(policy, frac, b, video):
        return _mean([r["correct"] for r in results if r["video"] == video and r["policy"] == policy
                      and r["fraction"] == frac and edges[b] <= r["depth"] < edges[b + 1] + (b == bins - 1)])

    grid = {policy: [[cell(policy, f, b, "reference") for f in ([None] if policy == "full" else fractions)]
                     for b in range(bins)] for policy in ["full"] + POLICIES}
    long_grid = {policy: [[cell(policy, None, b, "long")] for b in range(bins)] for policy in long_info if policy != "full"}
    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "tiny.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else None
    common.write_json(name, {"available": True, "settings": {
        "model": "tiny (bfloat16)", "weights_sha256_16": sha, "video_seconds": seconds, "seeds": seeds,
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
