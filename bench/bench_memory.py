"""Memory over a long stream: KV bytes and process RSS against video time, full cache vs each policy.

An hour of synthetic video (`streamer.world.sample_video.write_sample`, 96x96 px synthetic world, 1 fps; --quick: 5 minutes)
is replayed at 1 fps in chunks of 4 frames into a `StreamSession` with the built-in `tiny-random` model
(random SmolVLM, 2 layers; the KV arithmetic is the same as for a real model). Each policy runs in a
fresh subprocess so RSS belongs to that policy alone; after every chunk the script records the video
time, `cache.kv_bytes()` (the stored key/value tensors) and the process RSS (psutil).

The full cache cannot cover the hour: its positions grow with the stream and `StreamSession` raises
`BudgetError` when the next chunk would pass the model's `max_position_embeddings` (2048 for
tiny-random); the JSON records the video time where that happened. The bounded policies keep going.
"Flat" is judged on RSS from the end of the first 10% of the video to the end, and KV bytes once the
cache reached its budget. Writes bench/results/memory[_quick].json and .png.

    .venv/bin/python bench/bench_memory.py --quick      # 5 minutes of video
    .venv/bin/python bench/bench_memory.py              # one hour
"""

import argparse
import json
import os
import subprocess
import sys
import time

import common
from common import POLICIES


def worker(args) -> None:
    """Replay the video into one session; print one JSON line with the samples."""
    common.setup(args.threads)
    import psutil

    from streamer.models.registry import load_model
    from streamer.errors import BudgetError
    from streamer.frames import SamplerConfig, iter_chunks
    from streamer.session import StreamSession

    adapter = load_model("tiny-random")
    session = StreamSession(adapter, common.window(args.worker, args.budget), skip=None)  # every frame: the worst case
    proc = psutil.Process()
    samples, stopped, start = [], None, time.perf_counter()
    for chunk in iter_chunks(args.video, SamplerConfig(fps=1.0, chunk_frames=4, max_side=96)):
        try:
            session.ingest(chunk)
        except BudgetError as err:
            stopped = {"video_time_s": chunk.frames[0].time_s, "frames_ingested": session.frames_ingested,
                       "kv_tokens": session.cache.get_seq_length(), "error": str(err)}
            break
        samples.append([session.video_time_s, session.cache.kv_bytes(), proc.memory_info().rss,
                        round(time.perf_counter() - start, 3)])
    s = session.stats()
    print(json.dumps({"samples": samples, "stopped": stopped, "frames": session.frames_ingested,
                      "kv_tokens": s["kv_tokens"], "budget_bytes": s["budget_bytes"],
                      "max_positions": session.cache.max_positions,
                      "tokens_per_frame": adapter.tokens_per_frame, "wall_s": time.perf_counter() - start}))


def summarize(run: dict, seconds: float) -> dict:
    samples = run["samples"]
    after = [s for s in samples if s[0] >= 0.1 * seconds] or samples
    rss = [s[2] for s in after]
    kv = [s[1] for s in samples]
    return {
        "video_s_covered": samples[-1][0] if samples else 0.0,
        "kv_bytes_max": max(kv), "kv_bytes_end": kv[-1],
        "rss_mb_at_10pct": rss[0] / 2**20, "rss_mb_end": rss[-1] / 2**20,
        "rss_mb_max_after_10pct": max(rss) / 2**20,
        "rss_growth_mb_after_10pct": (rss[-1] - rss[0]) / 2**20,
        "wall_s": run["wall_s"], "frames": run["frames"],
        "stopped": run["stopped"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 minutes of video instead of an hour")
    ap.add_argument("--seconds", type=int, help="video length in seconds")
    ap.add_argument("--budget", type=int, default=512, help="tokens per layer of the bounded policies")
    ap.add_argument("--policies", nargs="*", default=["full"] + POLICIES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--video", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    seconds = args.seconds or (300 if args.quick else 3600)
    common.setup(args.threads)
    started = common.machine()

    from streamer.atomic import atomic_file
    from streamer.models.smollm2_tokenizer import cache_root
    from streamer.world.sample_video import write_sample

    video = cache_root() / "bench" / f"sample_{seconds}s_world96_1fps.mp4"
    if not video.is_file():
        with atomic_file(video) as tmp:
            write_sample(tmp, seconds=seconds, fps=1, frame_size=96)
    runs = {}
    for policy in args.policies:
        cmd = [sys.executable, __file__, "--worker", policy, "--video", str(video), "--budget", str(args.budget),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        runs[policy] = json.loads(out.stdout.strip().splitlines()[-1])
        s = summarize(runs[policy], seconds)
        print(f"{policy:12s} covered {s['video_s_covered']:6.0f}s  KV max {s['kv_bytes_max'] / 2**20:6.2f} MiB  "
              f"RSS {s['rss_mb_at_10pct']:.0f} -> {s['rss_mb_end']:.0f} MiB  ({s['wall_s']:.0f} s)"
              + (f"  STOPPED at {s['stopped']['video_time_s']:.0f}s" if s["stopped"] else ""))
    name = "memory_quick" if args.quick else "memory"
    common.write_json(name, {
        "settings": {"model": "tiny-random", "video_seconds": seconds, "fps": 1, "frame_size": "96x96",
                     "chunk_frames": 4, "budget": args.budget,
                     "tokens_per_frame": next(iter(runs.values()))["tokens_per_frame"],
                     "max_positions": next(iter(runs.values()))["max_positions"],
                     "note": "one fresh subprocess per policy; RSS and KV bytes sampled after every chunk"},
        "summary": {p: summarize(r, seconds) for p, r in runs.items()},
        "samples": {p: r["samples"] for p, r in runs.items()},
        "samples_columns": ["video_time_s", "kv_bytes", "rss_bytes", "wall_s"],
    }, started)
    plot(runs, seconds, args.budget, name)


def plot(runs, seconds, budget, name) -> None:
    plt = common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for policy, run in runs.items():
        t = [s[0] / 60 for s in run["samples"]]
        axes[0].plot(t, [s[1] / 2**10 for s in run["samples"]], label=policy, lw=1.5 if policy == "full" else 1)
        axes[1].plot(t, [s[2] / 2**20 for s in run["samples"]], label=policy, lw=1)
        if run["stopped"]:
            for ax in axes:
                ax.axvline(run["stopped"]["video_time_s"] / 60, color="k", ls=":", lw=0.8)
            axes[0].annotate("full cache stops\n(BudgetError)", (run["stopped"]["video_time_s"] / 60, 0),
                             fontsize=7, xytext=(5, 20), textcoords="offset points")
    axes[0].set(xlabel="video time (min)", ylabel="KV bytes (KiB)", title=f"KV cache, tiny-random, budget {budget}")
    axes[1].set(xlabel="video time (min)", ylabel="process RSS (MiB)", title="Process RSS")
    for ax in axes:
        ax.set_xlim(0, seconds / 60)
        ax.legend(fontsize=8)
    common.save_fig(fig, name)


if __name__ == "__main__":
    main()
