"""One stream, many viewers: what `StreamSession.fork()` costs against one session per viewer.

    .venv/bin/python bench/bench_viewers.py --threads 1

A stream of the synthetic world (1 fps, chunks of 4 frames, frame skip off, `combined` at `--budget`) is
ingested once; after every chunk each of N viewers asks one question (4 answer tokens) on its fork. For
N = 1, 2, 4, 8, 16 it reports the stream's ingest seconds (paid once, whatever N), the seconds per question,
the cache's peak KV bytes (the one cache plus what a question appends while it is answered) and the
process RSS; and, for comparison, N separate sessions that each ingest the same frames (the way to give N
people their own chat without `fork`), measured at N = 1 and `--separate`.
Deliberately not here: batching the questions of several viewers into one pass (one answer at a time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
from common import setup, write_json
from tqdm import tqdm


def stream_chunks(seconds: int):
    from streamer.video.frame import Chunk
    from streamer.world.scene import random_script

    frames = list(random_script(12_000_000, duration_s=seconds, n_events=min(5, seconds // 8), event_s=(3, 6)).frames(1.0))
    return [Chunk(tuple(frames[i:i + 4]), i // 4) for i in range(0, len(frames), 4)]


def shared(adapter, window, chunks, n: int) -> dict:
    """One stream, n viewers asking after every chunk."""
    import psutil

    from streamer.session import StreamSession

    stream = StreamSession(adapter, window, skip=None)
    viewers = [stream.fork() for _ in range(n)]
    asked = 0.0
    for c in tqdm(chunks, desc=f"{n} viewers, one stream", leave=False):
        stream.ingest(c)
        start = time.perf_counter()
        for i, v in enumerate(viewers):
            v.answer(f"What is on screen now? ({i})", max_new_tokens=4)
        asked += time.perf_counter() - start
    return {"viewers": n, "ingest_s": round(stream.ingest_seconds, 2), "question_s": round(asked / (n * len(chunks)), 3),
            "kv_bytes": stream.cache.kv_bytes(), "peak_kv_bytes": stream.peak_kv_bytes,
            "rss_bytes": psutil.Process().memory_info().rss, "stream_turns": len(stream.history)}


def separate(adapter, window, chunks, n: int) -> dict:
    """n sessions, each ingesting the stream and asking its own question after every chunk."""
    from streamer.session import StreamSession

    sessions = [StreamSession(adapter, window, skip=None) for _ in range(n)]
    for c in tqdm(chunks, desc=f"{n} separate sessions", leave=False):
        for s in sessions:
            s.ingest(c)
            s.answer("What is on screen now?", max_new_tokens=4)
    return {"sessions": n, "ingest_s": round(sum(s.ingest_seconds for s in sessions), 2),
            "kv_bytes": sum(s.cache.kv_bytes() for s in sessions)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--viewers", default="1,2,4,8,16")
    ap.add_argument("--separate", type=int, default=16, help="also n separate sessions (0: none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    setup(args.threads)
    started = common.machine()
    from streamer.kv_window import WindowConfig
    from streamer.models.registry import load_model

    adapter = load_model(args.model)
    window = WindowConfig(policy="combined", budget=args.budget)
    chunks = stream_chunks(args.seconds)
    out = {"model": args.model, "budget": args.budget, "seconds": args.seconds, "shared": [], "separate": []}
    for n in (int(x) for x in args.viewers.split(",")):
        out["shared"].append(shared(adapter, window, chunks, n))
        print(out["shared"][-1], flush=True)
    for n in sorted({1, args.separate} - {0}):
        out["separate"].append(separate(adapter, window, chunks, n))
        print(out["separate"][-1], flush=True)
    one = out["shared"][0]
    out["ingest_ratio_at_most"] = round(max(r["ingest_s"] for r in out["shared"]) / one["ingest_s"], 3)
    out["kv_ratio_at_most"] = round(max(r["peak_kv_bytes"] for r in out["shared"]) / one["peak_kv_bytes"], 3)
    write_json("viewers", out, started, path=args.out)


if __name__ == "__main__":
    main()
