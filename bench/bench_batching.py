"""Many sessions on one model: answers one after another (one lock) against decoding steps batched (`Batcher`).

    .venv/bin/python bench/bench_batching.py

For N = 1, 2, 4, 8, 16 sessions of `tiny` (each has seen `--chunks` chunks of the synthetic world,
`combined` at `--budget`), every session asks one question at the same moment (`--tokens` answer tokens,
end-of-answer ignored so every answer has that length). Serial: the sessions share one lock, as the web UI
did, and answer in turn. Batched: each session has its own lock and one `Batcher` runs their decoding steps
together. Reported: aggregate answer tokens per second, each answer's first-token time (median and
worst) and whether every batched answer equals its serial one.
Deliberately not here: viewers of one stream (`bench_viewers.py`).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import common
from common import setup, write_json
from tqdm import tqdm

QUESTIONS = ["What is on screen?", "Which digit is red?", "What colour is the circle?", "What happened last?"]


def make_sessions(adapter, window, chunks, n: int, **kwargs) -> list:
    from streamer.session import StreamSession

    out = []
    for i in range(n):
        s = StreamSession(adapter, window, skip=None, **kwargs)
        for c in chunks[i % 3: i % 3 + 3]:
            s.ingest(c)
        out.append(s)
    return out


def run_all(sessions, tokens: int) -> tuple[float, list[float], list[str]]:
    """Every session asks at once (one thread each); (wall seconds, first-token seconds, answers)."""
    n = len(sessions)
    firsts, answers = [0.0] * n, [""] * n
    go = threading.Barrier(n + 1)

    def ask(i):
        go.wait()
        start = time.perf_counter()
        pieces = []
        for piece in sessions[i].ask(QUESTIONS[i % len(QUESTIONS)], max_new_tokens=tokens):
            if not pieces:
                firsts[i] = time.perf_counter() - start
            pieces.append(piece)
        answers[i] = "".join(pieces)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start, firsts, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--sessions", default="1,2,4,8,16")
    ap.add_argument("--chunks", type=int, default=6, help="chunks of 4 frames the sessions have seen between them")
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    setup(args.threads)
    started = common.machine()
    from bench_viewers import stream_chunks

    from streamer.batching import Batcher
    from streamer.kv_window import WindowConfig
    from streamer.models.registry import load_model

    adapter = load_model(args.model)
    adapter.eos_token_ids = []  # every answer runs its full length
    window = WindowConfig(policy="combined", budget=args.budget)
    chunks = stream_chunks(args.chunks * 4)
    rows = []
    for n in tqdm([int(x) for x in args.sessions.split(",")], desc="sessions"):
        lock = threading.Lock()
        serial_s, serial_first, serial_answers = run_all(make_sessions(adapter, window, chunks, n, lock=lock), args.tokens)
        batcher = Batcher(adapter.model)
        batched_s, batched_first, batched_answers = run_all(make_sessions(adapter, window, chunks, n, batcher=batcher),
                                                            args.tokens)
        rows.append({"sessions": n, "serial_tokens_per_s": round(n * args.tokens / serial_s, 2),
                     "batched_tokens_per_s": round(n * args.tokens / batched_s, 2),
                     "speedup": round(serial_s / batched_s, 2),
                     "serial_first_token_s": {"median": round(statistics.median(serial_first), 3), "max": round(max(serial_first), 3)},
                     "batched_first_token_s": {"median": round(statistics.median(batched_first), 3), "max": round(max(batched_first), 3)},
                     "mean_batch": round(batcher.rows / max(1, batcher.batches), 2),
                     "same_answers": sum(a == b for a, b in zip(serial_answers, batched_answers))})
        print(rows[-1], flush=True)
    one = rows[0]["serial_first_token_s"]["median"]
    out = {"model": args.model, "budget": args.budget, "tokens": args.tokens, "rows": rows, "single_first_token_s": one}
    write_json("batching", out, started, path=args.out)


if __name__ == "__main__":
    main()
