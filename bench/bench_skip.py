"""Ingest speed on mostly static footage with the frame skip (`streamer.video.skip`) off and on, in one run.

    .venv/bin/python bench/bench_skip.py                    # 10 minutes of camera footage, tiny, combined @ 750
    .venv/bin/python bench/bench_skip.py --seconds 120 --camera clean

The footage is a scene of the synthetic world with one object every two minutes (on screen 2-4 s) and,
with `--camera noisy` (default), a real camera's faults: sensor noise (std 6), 5% brightness flicker and
a textured background panning 2 px/s (`Realism`, no distractors: nothing else moves but the small ball).
The frames are rendered once, before timing, and the same chunks (1 fps, 4 frames) go into two sessions
with the same cache settings, skip off then on, then off and on again (`--rounds`), so a burst of other
work spoils one sample of each. Reported per setting: frames sampled and fed, wall seconds, sampled frames
per second and real-time factor (video seconds per wall second), the skip's speed-up, and the KV bytes at
the end. Accuracy with the skip is measured by `quality.py --skip both`. Output: bench/results/skip.json.
"""

import argparse
import statistics
import time

import common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--camera", choices=["noisy", "clean"], default="noisy")
    ap.add_argument("--budget", type=int, default=750)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    common.setup(args.threads)
    started = common.machine()
    from streamer.video.skip import SkipConfig
    from streamer.frames import SamplerConfig, chunk_frames
    from streamer.models.registry import load_model
    from streamer.session import StreamSession
    from streamer.world.scene import Realism, random_script

    adapter = load_model(args.model)
    realism = Realism(noise_std=6.0, flicker=0.05, texture=20.0, pan_px_s=2.0) if args.camera == "noisy" else None
    script = random_script(10_950_000, duration_s=args.seconds, n_events=max(1, args.seconds // 120), event_s=(2, 4),
                           realism=realism)  # fmt: skip
    chunks = list(chunk_frames(list(script.frames(1.0)), SamplerConfig(fps=1.0, chunk_frames=4)))
    frames = sum(len(c.frames) for c in chunks)
    samples = {"off": [], "on": []}
    for _ in range(args.rounds):
        for name in samples:
            session = StreamSession(adapter, common.window("combined", args.budget), skip=SkipConfig() if name == "on" else None)
            start = time.perf_counter()
            for c in chunks:
                session.ingest(c)
            wall = time.perf_counter() - start
            samples[name].append({"wall_s": wall, "fed": session.frames_ingested, "kv_bytes": session.cache.kv_bytes()})
            print(f"skip {name:3s}: {session.frames_ingested}/{frames} frames fed in {wall:.1f} s "
                  f"({frames / wall:.2f} frames/s, {script.duration_s / wall:.2f}x real time)", flush=True)
    result = {}
    for name, runs in samples.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        result[name] = {"frames_sampled": frames, "frames_fed": runs[0]["fed"], "median_wall_s": round(wall, 2),
                        "frames_per_s": round(frames / wall, 3), "real_time_factor": round(script.duration_s / wall, 3),
                        "kv_bytes_at_end": runs[0]["kv_bytes"], "runs": runs}  # fmt: skip
    speedup = result["off"]["median_wall_s"] / result["on"]["median_wall_s"]
    print(f"speed-up with the skip: {speedup:.2f}x ({result['on']['frames_fed']} of {frames} frames fed)")
    common.write_json("skip", {"model": args.model, "camera": args.camera, "seconds": args.seconds,
                               "budget": args.budget, "policy": "combined", "skip": SkipConfig().__dict__,
                               "events": len(script.events), "speedup": round(speedup, 3), **result}, started)


if __name__ == "__main__":
    main()
