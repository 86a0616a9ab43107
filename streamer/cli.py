"""Headless Q&A over a video: `python -m streamer.cli VIDEO -q "what happened?"`.

Replays the video into a `StreamSession` (progress bar on stderr) and answers the questions, each at
its `--at` time (seeing only the frames before it) or at the end. Without questions it ingests the whole
video, then opens a prompt (Ctrl-C or EOF ends it). Answers go to stdout, as text or, with `--json`,
one JSON object per answer. A user error (missing file, bad option, question too long) prints one line
on stderr and exits 2; no traceback.
"""

import argparse
import json
import logging
import math
import sys
import time

from tqdm import tqdm

from streamer.errors import ConfigError, StreamerError
from streamer.frames import SamplerConfig, chunk_frames, open_source, sample_frames
from streamer.options import add_cache_options, add_model_options, window_config
from streamer.session import StreamSession

log = logging.getLogger(__name__)


def parse_time(text: str) -> float:
    """'75', '1:15', '00:01:15' or '75.5' -> seconds."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(p < 0 or not math.isfinite(p) for p in parts):
        raise ConfigError(f"--at {text!r} is not a time; use seconds (75) or [HH:]MM:SS (01:15)")
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (exit 2), like every other user error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamer", description=__doc__.split("\n\n")[0])
    p.add_argument("video", help="video file, URL/RTSP stream, or webcam index (0) / /dev/videoN")
    add_model_options(p)
    p.add_argument("-q", "--question", action="append", default=[], help="a question (repeatable)")
    p.add_argument("--at", action="append", default=[], type=str, metavar="TIME",
                   help="video time to ask the matching -q at (one per question)")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second of video to keep")
    p.add_argument("--chunk-frames", type=int, default=4, help="frames per forward pass")
    p.add_argument("--max-side", type=int, default=384, help="resize frames so the longer side is at most this")
    p.add_argument("--start", type=parse_time, default=0.0, help="start time")
    p.add_argument("--end", type=parse_time, default=None, help="end time")
    add_cache_options(p)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--realtime", action="store_true", help="release frames at wall-clock rate")
    p.add_argument("--json", action="store_true", help="one JSON object per answer on stdout")
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav", "opencv"])
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    return p


def schedule(questions: list[str], ats: list[str]) -> list[tuple[float, str]]:
    """(time, question) pairs in asking order; questions without --at go to the end (inf)."""
    if ats and len(ats) != len(questions):
        raise ConfigError(f"got {len(ats)} --at for {len(questions)} questions; give one --at per -q")
    times = [parse_time(a) for a in ats] if ats else [math.inf] * len(questions)
    return sorted(zip(times, questions), key=lambda tq: tq[0])


def run(args: argparse.Namespace) -> int:
    from streamer.models.registry import load_model  # heavy import, after argument errors are out of the way

    if args.chunk_frames < 1 or args.fps <= 0:
        raise ConfigError("--chunk-frames must be >= 1 and --fps > 0")
    window_config(args)  # bad cache options fail here, before the slow model load
    plan = schedule(args.question, args.at)
    sampler = SamplerConfig(fps=args.fps, start_s=args.start, end_s=args.end, max_side=args.max_side,
                            chunk_frames=args.chunk_frames, realtime=args.realtime, backend=args.backend)
    source = open_source(args.video, backend=args.backend)
    adapter = load_model(args.model, device=args.device, dtype=args.dtype)
    if adapter.note:
        print(f"note: {adapter.note}", file=sys.stderr)
    session = StreamSession(adapter, window_config(args, adapter.describe()["max_position_embeddings"]))
    total = None
    if source.duration_s:
        end = min(source.duration_s, args.end or math.inf)
        total = max(0, int((end - args.start) * args.fps))
    bar = tqdm(total=total, unit="frame", desc="ingest", file=sys.stderr, disable=None)
    with source:
        # a question at time t sees exactly the frames up to t: chunks are cut at question times
        for chunk in chunk_frames(sample_frames(source, sampler), sampler, cut_at=[t for t, _ in plan]):
            while plan and chunk.frames[0].time_s > plan[0][0]:
                bar.clear()
                answer_one(session, plan.pop(0)[1], args)
            session.ingest(chunk)
            bar.update(len(chunk.frames))
            bar.set_postfix(kv=session.cache.next_position(), t=f"{session.video_time_s:.0f}s")
    bar.close()
    for _, question in plan:  # questions after the last frame (or without --at)
        answer_one(session, question, args)
    if session.frames_ingested == 0:
        raise ConfigError("no frames were sampled; check --start/--end against the video's length")
    if not args.question:
        prompt_loop(session, args)
    return 0


def answer_one(session: StreamSession, question: str, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.json:
        answer = session.answer(question, args.max_new_tokens)
    else:
        print(f"[{session.video_time_s:.1f}s] Q: {question}\nA: ", end="", flush=True)
        answer = ""
        for piece in session.ask(question, args.max_new_tokens):
            answer += piece
            print(piece, end="", flush=True)
        print(flush=True)
    if args.json:
        s = session.stats()
        print(json.dumps({
            "question": question, "answer": answer, "video_time_s": s["video_time_s"],
            "frames_ingested": s["frames_ingested"], "kv_tokens": s["kv_tokens"], "kv_bytes": s["kv_bytes"],
            "peak_kv_bytes": s["peak_kv_bytes"], "rss_bytes": s["rss_bytes"],
            "ingest_seconds": s["ingest_seconds"], "answer_seconds": round(time.perf_counter() - start, 3),
            "policy": s["policy"], "merge": s["merge"], "budget": s["budget"], "evicted": s["evicted"],
            "merged": s["merged"], "model": args.model,
        }), flush=True)


def prompt_loop(session: StreamSession, args: argparse.Namespace) -> None:
    """Interactive questions after ingestion; EOF or Ctrl-C ends it."""
    print(f"watched {session.frames_ingested} frames up to {session.video_time_s:.1f}s; ask away "
          "(Ctrl-D to quit)", file=sys.stderr)
    while True:
        try:
            question = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if not question.strip():
            continue
        try:
            answer_one(session, question, args)
        except StreamerError as err:  # a too-long question must not end the conversation
            print(f"error: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except StreamerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
