"""Headless Q&A over a video: `python -m streamer.cli VIDEO -q "what happened?"`.

Replays the video into a `StreamSession` (progress bar on stderr) and answers the questions, each at
its `--at` time (seeing only the frames before it) or at the end; `--alert QUESTION` adds a standing yes/no
question asked after every chunk, printed as an alert line (or JSON object) each time its answer turns yes.
Without questions or alerts it ingests the whole video, then opens a prompt (Ctrl-C or EOF ends it; a bad question there is one error line and the
conversation goes on). Answers go to stdout, as text or, with `--json`, one JSON object per answer;
control characters in text output (an answer's escape sequences, a file name's) are shown escaped
(`\\x1b`), never sent to the terminal as such.

Every option is checked before any work starts (before the video is opened and the model loaded).
Exit codes (`streamer.entry.run_main`): 0 done; 2 a user error (missing file, bad option, bad question) or
a stdout that cannot take the answers (`> /dev/full`), one line on stderr, no traceback; 130 Ctrl-C, also
while the modules import; 141 stdout was closed (`streamer ... | head -c 5`): a quiet stop.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python -m streamer.cli: run_main imports this module again, with Ctrl-C handled
    from streamer.entry import run_main

    sys.exit(run_main("streamer.cli"))

import argparse  # noqa: E402 (the imports below take seconds; Ctrl-C during them is run_main's)
import json
import logging
import math
import re
import time
from typing import TYPE_CHECKING

from streamer.entry import run_main, writing_stdout
from streamer.errors import ConfigError, OutputError, StreamerError
from streamer.frames import BACKENDS, SamplerConfig, open_source
from streamer.models.runtime import LoadSettings
from streamer.options import (
    FPS, MAX_NEW_TOKENS, OneLineParser, add_cache_options, add_model_options, int_in, skip_config, window_config,
)
from streamer.shared_types import format_timestamp
from streamer.text import check_question, printable
from streamer.watch import WINDOW_S, Alert

if TYPE_CHECKING:  # the session pulls in transformers (seconds): run() imports it after the arguments are checked
    from streamer.session import StreamSession

log = logging.getLogger(__name__)


MAX_TIME_S = 1e7  # latest --start/--end/--at in seconds (115 days)
_CLOCK = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)")  # [HH:]MM:SS[.frac]


def parse_time(text: str) -> float:
    """'75', '75.5', '1:15' or '01:01:15' -> seconds (minutes and seconds under 60, at most MAX_TIME_S).

    An argparse `type=`: anything else raises argparse.ArgumentTypeError.
    """
    clock = _CLOCK.fullmatch(text.strip())
    if clock:
        hours, minutes, seconds = int(clock[1] or 0), int(clock[2]), float(clock[3])
        value = hours * 3600 + minutes * 60 + seconds if minutes < 60 and seconds < 60 else math.nan
    else:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
    if not 0 <= value <= MAX_TIME_S:  # NaN and inf fail too
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use seconds (75.5) or [HH:]MM:SS (01:15) with minutes and seconds under 60, "
            f"at most {MAX_TIME_S:.0f} s"
        )
    return value


def alert_window(text: str) -> float | None:
    """--alert-window: seconds (or [HH:]MM:SS), or 'all' (None: the whole cache)."""
    if text.strip().lower() == "all":
        return None
    try:
        return parse_time(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err}; or 'all' for the whole cache") from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="streamer", description=__doc__.split("\n\n")[0])
    p.add_argument("video", help="video file, URL/RTSP stream, or webcam index (0) / /dev/videoN")
    add_model_options(p)
    p.add_argument("-q", "--question", action="append", default=[], help="a question (repeatable)")
    p.add_argument("--alert", action="append", default=[], metavar="QUESTION",
                   help="a standing yes/no question (repeatable), asked after every chunk: prints "
                        "'[HH:MM:SS] alert: QUESTION -> ANSWER' each time its answer turns yes")
    p.add_argument("--alert-window", type=alert_window, default=WINDOW_S, metavar="SECONDS",
                   help=f"what a standing question sees: the frames of the last SECONDS (at least the last chunk's) "
                        f"and the opening, not the chat; 'all': the whole cache (default {WINDOW_S:g})")
    p.add_argument("--at", action="append", default=[], type=parse_time, metavar="TIME",
                   help="video time to ask the matching -q at (one per question): seconds or [HH:]MM:SS")
    p.add_argument("--fps", type=FPS, default=1.0, help="frames per second of video to keep, in (0, 60]")
    p.add_argument("--chunk-frames", type=int_in(1, 256), default=4, help="frames per forward pass, 1-256")
    p.add_argument("--max-side", type=int_in(16, 8192), default=384,
                   help="resize frames so the longer side is at most this, 16-8192")
    p.add_argument("--start", type=parse_time, default=0.0, help="start time: seconds or [HH:]MM:SS")
    p.add_argument("--end", type=parse_time, default=None, help="end time: seconds or [HH:]MM:SS")
    add_cache_options(p)
    p.add_argument("--max-new-tokens", type=MAX_NEW_TOKENS, default=64, help="longest answer in tokens, 1-4096")
    p.add_argument("--realtime", action="store_true", help="release frames at wall-clock rate")
    p.add_argument("--json", action="store_true", help="one JSON object per answer on stdout")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="decoder for a file: auto tries pyav, decord, opencv")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    return p


def schedule(questions: list[str], ats: list[float]) -> list[tuple[float, str]]:
    """(time, question) pairs in asking order; questions without --at go to the end (inf).
    Each question's text is checked here, before any work (`check_question`)."""
    if ats and len(ats) != len(questions):
        raise ConfigError(f"got {len(ats)} --at for {len(questions)} questions; give one --at per -q")
    for question in questions:
        check_question(question)
    times = ats or [math.inf] * len(questions)
    return sorted(zip(times, questions), key=lambda tq: tq[0])


def run(args: argparse.Namespace) -> int:
    # every check before any work: argparse did the ranges; these are the checks that need several options
    load = LoadSettings(args.model, args.device, args.dtype, args.speed)
    window_config(args)
    skip = skip_config(args)
    plan = schedule(args.question, args.at)
    for question in args.alert:
        check_question(question)
    if args.end is not None and args.end <= args.start:
        raise ConfigError(f"--end ({args.end:g} s) must be after --start ({args.start:g} s)")
    sampler = SamplerConfig(fps=args.fps, start_s=args.start, end_s=args.end, max_side=args.max_side,
                            chunk_frames=args.chunk_frames, realtime=args.realtime)  # the source is opened below
    source = open_source(args.video, backend=args.backend)
    from streamer.models.registry import load_model  # heavy imports (seconds), after the user's errors are out
    from streamer.replay import replay
    from streamer.session import StreamSession

    adapter = load_model(load.name_or_path, device=load.device, dtype=load.dtype, speed=load.speed)
    if adapter.note:
        print(f"note: {adapter.note}", file=sys.stderr)
    session = StreamSession(adapter, window_config(args, adapter.describe()["max_position_embeddings"]), skip=skip)
    session.watch_window_s = args.alert_window
    for question in args.alert:
        session.watch(question)  # a standing question too long for the budget is refused here
    total = None
    if source.duration_s:
        end = min(source.duration_s, args.end or math.inf)
        total = max(0, int((end - args.start) * args.fps))
    live = source.is_live or args.realtime  # frames cannot wait for the model: dropped (counted) to keep up
    with source:  # a question at time t sees exactly the frames up to t (questions without --at: after the last)
        replay(session, source, sampler, [t for t, _ in plan],
               lambda i, pipeline: answer_one(session, plan[i][1], args, pipeline.live_stats()),
               total=total, live=live, on_alert=lambda alert: print_alert(alert, args.json))
    if session.frames_ingested == 0:
        raise ConfigError("no frames were sampled; check --start/--end against the video's length")
    if not args.question and not args.alert:
        prompt_loop(session, args)
    return 0


def answer_one(session: StreamSession, question: str, args: argparse.Namespace, live: dict | None = None) -> None:
    """Ask and print one question; `live`: the live stream's `lag_s` and `frames_dropped` (`Pipeline.live_stats`)."""
    start = time.perf_counter()
    pieces = session.ask(question, args.max_new_tokens)  # a bad question is refused here, before any output
    with writing_stdout():
        if args.json:
            _print_json(session, question, "".join(pieces), start, args, live)
            return
        print(f"[{session.video_time_s:.1f}s] Q: {printable(question)}\nA: ", end="", flush=True)
        for piece in pieces:
            print(printable(piece), end="", flush=True)
        print(flush=True)


def print_alert(alert: Alert, as_json: bool) -> None:
    with writing_stdout():
        if as_json:
            print(json.dumps(alert.to_json()), flush=True)
        else:
            print(f"[{format_timestamp(alert.video_time_s)}] alert: {printable(alert.question)} -> "
                  f"{printable(alert.answer)}", flush=True)


def _print_json(session: StreamSession, question: str, answer: str, start: float, args: argparse.Namespace,
                live: dict | None) -> None:
    s = session.stats()
    print(json.dumps({
            "question": question, "answer": answer, "video_time_s": s["video_time_s"],
            "frames_ingested": s["frames_ingested"], "frames_skipped": s["frames_skipped"],
            "kv_tokens": s["kv_tokens"], "kv_bytes": s["kv_bytes"],
            "peak_kv_bytes": s["peak_kv_bytes"], "rss_bytes": s["rss_bytes"],
            "ingest_seconds": s["ingest_seconds"], "answer_seconds": round(time.perf_counter() - start, 3),
            "policy": s["policy"], "merge": s["merge"], "redundancy": s["redundancy"],
            "skip_static": s["skip_static"], "budget": s["budget"], "evicted": s["evicted"],
            "merged": s["merged"], "model": args.model, "speed": args.speed,
            "lag_s": live["lag_s"] if live else 0.0, "frames_dropped": live["frames_dropped"] if live else 0,  # prompt: none
        }), flush=True)  # json.dumps escapes control characters itself


def prompt_loop(session: StreamSession, args: argparse.Namespace) -> None:
    """Interactive questions after ingestion; EOF or Ctrl-C ends it, a bad question does not."""
    print(f"watched {session.frames_ingested} frames up to {session.video_time_s:.1f}s; ask away "
          "(Ctrl-D to quit)", file=sys.stderr)
    if hasattr(sys.stdin, "reconfigure"):  # undecodable bytes reach the session's check as surrogates
        sys.stdin.reconfigure(errors="surrogateescape")
    while True:
        try:
            with writing_stdout():  # the prompt goes to stdout
                question = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if not question.strip():
            continue
        try:
            answer_one(session, question, args)
        except OutputError:  # nowhere to write the answers: the conversation is over
            raise
        except StreamerError as err:  # a bad or too-long question must not end the conversation
            print(f"error: {printable(str(err))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_main("streamer.cli", argv)
