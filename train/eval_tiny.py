"""Measure the `tiny` model on held-out world seeds, through the real streaming path; writes a JSON.

    .venv/bin/python -m train.eval_tiny --frames 100 --needles 10 --policy-needles 5 \
        --out train/results/eval_tiny.json

- single-frame: one frame per held-out seed, fed as one chunk to a `StreamSession` (full cache), then
  each of the colour / shape / digit questions in a fresh session; exact match of the answer.
- needle: a 5-minute video at 1 fps (300 frames, ingested in chunks of 4) with one object showing for
  2-4 s at a random time; the question "What digit was on the <colour> <shape>?"; exact match. Run with
  the full cache (`WindowConfig(policy="full", budget=None)`) and with each bounded policy at a budget
  of 10% of the full cache's tokens.

Seeds start at train.data.HELD_OUT_SEED, which training never draws. Deliberately not here: training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from streamer.models.registry import load_model
from streamer.frames import Chunk, SamplerConfig, chunk_frames
from streamer.kv_window import WindowConfig
from streamer.session import StreamSession
from streamer.world.scene import frame_questions, random_script, single_frame, video_questions
from train.data import HELD_OUT_SEED

log = logging.getLogger("eval_tiny")

FRAME_KINDS = ("colour", "shape", "digit")
BOUNDED = ("sink-recent", "saddle", "text-prior", "combined")
NEEDLE_SEED = HELD_OUT_SEED + 500_000  # needle videos use their own held-out seed range


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def single_frame_eval(adapter, n: int) -> dict:
    session = StreamSession(adapter, WindowConfig(policy="full", budget=None))
    per_kind = {k: [0, 0] for k in FRAME_KINDS}
    wrong = []
    for i in range(n):
        frame, script = single_frame(HELD_OUT_SEED + i)
        for qa in frame_questions(script, frame.time_s):
            if qa.kind not in per_kind:
                continue
            session.reset()
            session.ingest(Chunk((frame,)))
            got = normalise(session.answer(qa.question, max_new_tokens=8))
            ok = got == qa.answer
            per_kind[qa.kind][0] += ok
            per_kind[qa.kind][1] += 1
            if not ok and len(wrong) < 20:
                wrong.append({"seed": HELD_OUT_SEED + i, "q": qa.question, "want": qa.answer, "got": got})
    right = sum(r for r, _ in per_kind.values())
    total = sum(t for _, t in per_kind.values())
    return {
        "accuracy": round(right / total, 4), "n": total,
        "per_kind": {k: round(r / t, 4) for k, (r, t) in per_kind.items()}, "wrong_examples": wrong,
    }  # fmt: skip


NEEDLE_SECONDS = 300  # video length; --needle-seconds changes it (for quick checks)


def needle_script(i: int):
    script = random_script(NEEDLE_SEED + i, duration_s=NEEDLE_SECONDS, n_events=1, event_s=(2, 4))
    qa = next(q for q in video_questions(script) if q.kind == "needle_digit")
    return script, qa


def needle_eval(adapter, n: int, window: WindowConfig) -> dict:
    session = StreamSession(adapter, window)
    right, rows, seconds = 0, [], 0.0
    for i in range(n):
        script, qa = needle_script(i)
        session.reset()
        start = time.perf_counter()
        for chunk in needle_chunks(script):
            session.ingest(chunk)
        got = normalise(session.answer(qa.question, max_new_tokens=8))
        seconds += time.perf_counter() - start
        right += got == qa.answer
        event = script.events[0]
        rows.append({"seed": NEEDLE_SEED + i, "at_s": event.start_s, "q": qa.question, "want": qa.answer, "got": got})
        log.info("needle %s %d: %s -> %r (want %r)", window.policy, i, qa.question, got, qa.answer)
    stats = session.stats()
    return {
        "policy": window.policy, "budget": window.budget, "accuracy": round(right / n, 4), "n": n,
        "seconds_per_video": round(seconds / n, 1), "cache_tokens_at_end": stats.get("tokens", stats.get("length")),
        "answers": rows,
    }  # fmt: skip


def needle_chunks(script):
    """The needle video as the session receives it: 1 fps, chunks of 4 frames."""
    return chunk_frames(script.frames(1.0), SamplerConfig(fps=1.0, chunk_frames=4))


def full_cache_tokens(adapter) -> int:
    """Tokens a 5-minute needle video takes in the full cache (frames only)."""
    script, _ = needle_script(0)
    from streamer.vocab import Conversation

    conv, total = Conversation(), 0
    for chunk in needle_chunks(script):
        p = adapter.chunk_prompt(chunk, conv)
        conv, total = p.after, total + p.n_tokens
    return total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluate the `tiny` model on held-out world seeds.")
    p.add_argument("--model", default="tiny")
    p.add_argument("--frames", type=int, default=100, help="held-out frames (3 questions each)")
    p.add_argument("--needles", type=int, default=10, help="5-minute needle videos with the full cache")
    p.add_argument("--policy-needles", type=int, default=5, help="needle videos per bounded policy")
    p.add_argument("--policies", default="full," + ",".join(BOUNDED), help="comma-separated policies to run")
    p.add_argument("--budget-fraction", type=float, default=0.10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default=None, help="model dtype (default: float32 on CPU)")
    p.add_argument("--needle-seconds", type=int, default=300, help="needle video length (s)")
    p.add_argument("--out", type=Path, default=Path("train/results/eval_tiny.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    globals()["NEEDLE_SECONDS"] = args.needle_seconds
    start = time.perf_counter()
    adapter = load_model(args.model, dtype=args.dtype)
    results: dict = {"model": args.model, "tokens_per_frame": adapter.tokens_per_frame,
                     "needle_seconds": args.needle_seconds, "fps": 1.0,
                     "dtype": str(adapter.dtype).removeprefix("torch.")}

    def write() -> None:
        results["wall_seconds"] = round(time.perf_counter() - start, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))

    if args.frames:
        results["single_frame"] = single_frame_eval(adapter, args.frames)
        log.info("single-frame: %s", {k: v for k, v in results["single_frame"].items() if k != "wrong_examples"})
        write()
    full = full_cache_tokens(adapter)
    results["needle_full_cache_frame_tokens"] = full
    budget = max(64, int(full * args.budget_fraction))
    results["needle"] = {}
    policies = [x for x in args.policies.split(",") if x]
    results["needle_budget_tokens"] = budget
    if args.needles and "full" in policies:
        results["needle"]["full"] = needle_eval(adapter, args.needles, WindowConfig(policy="full", budget=None))
        log.info("needle full: %.2f", results["needle"]["full"]["accuracy"])
        write()
    if args.policy_needles:
        for policy in [x for x in policies if x != "full"]:
            r = needle_eval(adapter, args.policy_needles, WindowConfig(policy=policy, budget=budget))
            results["needle"][policy] = r
            log.info("needle %s at budget %d: %.2f", policy, budget, r["accuracy"])
            write()
    write()
    print(json.dumps({k: v for k, v in results.items()}, indent=1)[:4000])


if __name__ == "__main__":
    main()
