"""Frame sampler benchmark: one hour of 640x360 30 fps H.264 sampled at 1 fps, for each backend.

The script writes the video itself (once, cached in the temp folder; a panning texture with the frame
number drawn as a bit strip, libx264 veryfast, a keyframe every 2 s), then samples it with
`sample_frames` in a fresh subprocess per backend while a thread records the process RSS with psutil.
Each sampled frame's drawn number is checked against its time. Results: bench/results/frames.json and
bench/results/frames_rss.png. Target: under 3 minutes per hour of video on 2 cores, flat RSS.

    .venv/bin/python bench/bench_frames.py                      # the full hour, backends auto/pyav/opencv
    .venv/bin/python bench/bench_frames.py --minutes 5 --backends pyav   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.atomic import atomic_file  # noqa: E402

RESULTS = ROOT / "bench" / "results"
W, H, FPS, GOP = 640, 360, 30, 60
BITS, ROWS = 24, 3  # the frame number as 3 rows x 8 cells at the top of the frame
STRIP = 45  # px height of the bit strip


def draw(i: int, texture: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB frame i: the texture panned by 3 px per frame, a moving bar, the number as bits."""
    x = (3 * i) % W
    image = np.ascontiguousarray(texture[:, x : x + W])
    image[STRIP : STRIP + 20, : (i % W)] = (255, 40, 40)
    image[:STRIP] = 0
    for bit in range(BITS):
        if (i >> bit) & 1:
            r, c = divmod(bit, 8)
            image[r * 15 : (r + 1) * 15, c * 80 : (c + 1) * 80] = 255
    return image


def read_number(image: np.ndarray) -> int:
    """Inverse of the bit strip of `draw`, at any output size."""
    h, w = image.shape[:2]
    scale_y, cell_w = h / H, w / 8
    number = 0
    for bit in range(BITS):
        r, c = divmod(bit, 8)
        y = int((r * 15 + 7.5) * scale_y)
        x0, x1 = int((c + 0.3) * cell_w), int((c + 0.7) * cell_w)
        if image[y, x0:x1].mean() > 128:
            number |= 1 << bit
    return number


def make_video(path: Path, minutes: float) -> dict:
    import av
    import cv2

    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 256, (H // 8, W // 4, 3), dtype=np.uint8), (2 * W, H),
                         interpolation=cv2.INTER_CUBIC)  # (H, 2W, 3) smooth random texture
    n = int(minutes * 60 * FPS)
    start = time.perf_counter()
    with atomic_file(path) as tmp, av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"}
        for i in range(n):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(draw(i, texture), format="rgb24")))
        out.mux(stream.encode())
    return {"generate_seconds": round(time.perf_counter() - start, 1)}


def worker(video: str, backend: str, fps: float, max_side: int | None) -> dict:
    """Sample `video` once, in this process; returns timings, correctness and the RSS trace."""
    import psutil

    from streamer.frames import SamplerConfig, open_source, sample_frames

    process = psutil.Process()
    trace: list[tuple[float, float, int]] = []  # (wall s, rss MB, frames so far)
    count, wrong, stop = 0, 0, threading.Event()
    start = time.perf_counter()

    def record():
        while not stop.is_set():
            trace.append((time.perf_counter() - start, process.memory_info().rss / 2**20, count))
            stop.wait(0.25)

    thread = threading.Thread(target=record, daemon=True)
    rss_start = process.memory_info().rss / 2**20
    thread.start()
    with open_source(video, backend) as source:
        chosen = source.backend
        last_time = None
        for frame in sample_frames(source, SamplerConfig(fps=fps, max_side=max_side)):
            wrong += read_number(frame.image) != round(frame.time_s * FPS)
            count += 1
            last_time = frame.time_s
        decoded = source.frames_decoded
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    trace.append((seconds, process.memory_info().rss / 2**20, count))
    warm = next((rss for _, rss, n in trace if n >= max(count // 20, 1)), trace[-1][1])  # after 5% of the frames
    peak_after = max(rss for _, rss, n in trace if n >= max(count // 20, 1))
    return {
        "backend": backend, "chosen_backend": chosen, "frames": count, "frames_wrong": int(wrong),
        "last_time_s": last_time, "seconds": round(seconds, 2),
        "video_seconds_per_wall_second": round(count / fps / seconds, 1) if seconds else None,
        "frames_decoded": decoded if chosen != "decord" else None,  # decord skips inside C++: not counted
        "rss_mb": {"start": round(rss_start, 1), "after_warmup": round(warm, 1),
                   "peak": round(max(r for _, r, _ in trace), 1), "end": round(trace[-1][1], 1),
                   "growth_after_warmup": round(peak_after - warm, 1)},
        "rss_trace": [(round(t, 2), round(r, 1), n) for t, r, n in trace],
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        t, rss, _ = zip(*r["rss_trace"])
        ax.plot(t, rss, label=f"{r['chosen_backend']} ({r['seconds']:.0f} s)")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("process RSS (MB)")
    ax.set_title("Sampling 1 fps from 1 h of 640x360 30 fps H.264")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="length of the generated video")
    p.add_argument("--backends", nargs="+", default=["auto", "pyav", "opencv"])
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--max-side", type=int, default=384)
    p.add_argument("--video", type=Path, default=None, help="video to use/generate (default: in the temp folder)")
    p.add_argument("--out", type=Path, default=RESULTS / "frames.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # to stderr
        print(json.dumps(worker(str(args.video), args.worker, args.fps, args.max_side)))
        return

    video = args.video or Path(tempfile.gettempdir()) / "streamer_bench" / f"{W}x{H}_{FPS}fps_{args.minutes:g}min.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    made_file = video.with_suffix(".json")  # how the cached video was made
    if not video.exists():
        print(f"writing {video} ({args.minutes:g} min of {W}x{H} {FPS} fps)...", flush=True)
        made_file.write_text(json.dumps(make_video(video, args.minutes)))
    made = json.loads(made_file.read_text()) if made_file.exists() else {}
    print(f"video {video}: {made}", flush=True)
    results, load_before = [], os.getloadavg()
    for backend in args.backends:
        cmd = [sys.executable, __file__, "--worker", backend, "--video", str(video), "--fps", str(args.fps),
               "--max-side", str(args.max_side)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["log_warnings"] = [line for line in out.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
        results.append(r)
        print(f"{backend:>6} -> {r['chosen_backend']}: {r['frames']} frames ({r['frames_wrong']} wrong) in "
              f"{r['seconds']} s, RSS {r['rss_mb']['after_warmup']} -> peak {r['rss_mb']['peak']} MB "
              f"(growth after warm-up {r['rss_mb']['growth_after_warmup']} MB) {r['log_warnings']}", flush=True)

    import av
    import cv2
    import decord

    report = {
        "task": f"sample {args.fps:g} fps from {args.minutes:g} min of {W}x{H} {FPS} fps H.264 (keyframe every "
                f"{GOP / FPS:g} s), max_side={args.max_side}",
        "command": "python bench/bench_frames.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "video": {"path": str(video), "size_mb": round(video.stat().st_size / 2**20, 1), **made},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "av": av.__version__,
                    "decord": decord.__version__, "opencv": cv2.__version__,
                    "load_avg_1_5_15_min_before_and_after": [load_before, os.getloadavg()]},  # other work on the box
        "target": {"seconds_per_hour": 180, "met": all(r["seconds"] * 60 / args.minutes < 180 for r in results)},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(results, args.out.with_name("frames_rss.png"))
    print(f"wrote {args.out} and {args.out.with_name('frames_rss.png')}")


if __name__ == "__main__":
    main()
