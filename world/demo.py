"""The first run: a one-minute sample of the synthetic world, watched under a small KV budget.

    streamer-demo            (or: python -m streamer.world.demo [--budget 512] [--policy combined])

Writes the sample video (to a temporary folder unless `--video PATH`), lists what happens in it, then
streams it into the built-in `tiny` model at 1 frame/s with a KV budget far smaller than the video
(about 1500 tokens at 512: the cache is full after about twenty seconds and stays there). It asks three
questions in one chat, about objects on screen or just gone, prints each answer beside the right one, and
shows after each answer and at the end what the cache holds: tokens against the budget, real KV
bytes, how many tokens were evicted and merged, and which moments of the video are still in it.

The questions are ones `tiny` answers right here; the sample's other questions (order, counts, when)
are listed by `python -m streamer.world.sample_video`, and `tiny` still gets some of those wrong, more
so under a budget of 256, where the combined policy keeps the first object's tokens and the model
then answers about it (see README, "Built-in models").
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python -m streamer.world.demo: run_main imports this module again, with Ctrl-C handled
    from streamer.entry import run_main

    sys.exit(run_main("streamer.world.demo"))

import argparse  # noqa: E402 (the imports below take seconds; Ctrl-C during them is run_main's)
import tempfile
from pathlib import Path

from streamer.entry import run_main
from streamer.frames import SamplerConfig
from streamer.kv_window import POLICIES, WindowConfig
from streamer.kv_config import DEFAULT_POLICY
from streamer.options import int_in, policy_arg
from streamer.replay import replay
from streamer.report import cache_line
from streamer.session import StreamSession
from streamer.shared_types import format_timestamp
from streamer.world.sample_video import describe, sample_script, write_sample

SECONDS = 60.0
QUESTIONS = (  # (video time asked at, question, right answer) for the sample's seed and length
    (30.0, "What digit was on the red circle?", "9"),  # the red circle is on screen from 00:00:24 to 00:00:29
    (31.0, "What appeared after the purple triangle?", "red circle"),  # the purple triangle: 00:00:17-00:00:21
    (36.0, "What colour is the shape?", "blue"),  # the blue square, 00:00:32 to 00:00:38
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamer-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=Path, help="where to write the sample video (default: a temporary folder)")
    p.add_argument("--model", default="tiny", help="model name or path (default: the built-in tiny)")
    p.add_argument("--policy", default=DEFAULT_POLICY, type=policy_arg, metavar="NAME|SPEC",
                   help=f"KV cache policy: one of {', '.join(p for p in POLICIES if p != 'full')} or a spec string")
    p.add_argument("--budget", type=int_in(8, 4096), default=512, help="KV tokens kept per layer (default 512)")
    return p


def run(args: argparse.Namespace) -> int:
    from streamer.models.registry import load_model  # heavy import, after argument errors

    window = WindowConfig(policy=args.policy, budget=args.budget)
    with tempfile.TemporaryDirectory(prefix="streamer-demo-") as tmp:
        video = write_sample(args.video or Path(tmp) / "sample.mp4", seconds=SECONDS)
        print(f"sample video: {video} ({SECONDS:.0f} s of the synthetic world)")
        print("\n".join("  " + line for line in describe(sample_script(SECONDS)) if not line.startswith("Q:")))
        print(f"loading the model {args.model!r} ...", flush=True)
        adapter = load_model(args.model)
        session = StreamSession(adapter, window)
        print(f"watching at 1 frame/s with the {args.policy!r} policy and a budget of {args.budget} "
              "KV tokens per layer", flush=True)
        right = []
        replay(session, video, SamplerConfig(fps=1.0, chunk_frames=4), [t for t, _, _ in QUESTIONS],
               lambda i, _pipeline: right.append(ask(session, *QUESTIONS[i])), total=int(SECONDS), desc="watching")
    stats = session.stats()
    print(f"\nafter {format_timestamp(stats['video_time_s'])} of video ({stats['frames_ingested']} frames fed, "
          f"{stats['frames_skipped']} unchanged ones skipped): "
          f"{cache_line(stats)}")
    print(f"peak KV memory {stats['peak_kv_bytes'] / 2**20:.1f} MB; a full cache would hold all "
          f"{stats['seen_tokens']} tokens ({stats['seen_tokens'] / args.budget:.1f}x the budget) and keep "
          "growing with the video")
    print(f"{sum(right)} of {len(QUESTIONS)} answers right")
    return 0


def ask(session: StreamSession, at: float, question: str, expected: str) -> bool:
    """Ask one question, print the answer beside the right one and the cache line; True if right."""
    answer = session.answer(question, max_new_tokens=8).strip()
    ok = answer.lower() == expected
    print(f"[{format_timestamp(at)}] Q: {question}\n  A: {answer}   (right answer: {expected}: "
          f"{'right' if ok else 'wrong'})\n  {cache_line(session.stats())}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    return run_main("streamer.world.demo", argv)
