"""Command-line options shared by the CLI and the web UI: which model, and how its cache is bounded.

One place for the flags, their defaults (a budget of 2048 tokens per layer, or half the model's
positions if that is fewer) and their early validation, so `streamer.cli` and `streamer.app.ui` agree.
Numbers are checked by argparse `type=` functions (`int_in`, `float_in`, and the ready-made `FPS` and
`MAX_NEW_TOKENS`), so a value out of range is one line naming the option and the allowed range (exit 2)
before any work starts.
"""

import argparse
import math
from collections.abc import Callable

from streamer.video.skip import SkipConfig
from streamer.text import printable
from streamer.kv_merge import MERGE_MODES
from streamer.kv_scorers import SCORERS
from streamer.kv_config import DEFAULT_POLICY, POLICIES, WindowConfig
from streamer.shared_types import SPEEDS

# control characters but newline and tab, bidirectional overrides and lone surrogates
class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (exit 2), like every other user error."""

    def error(self, message: str):
        self.exit(2, f"error: {printable(message)} (see --help)\n")


DEFAULT_BUDGET = 2048
MAX_BUDGET = 10**7  # tokens per layer; far beyond any model's positions, well inside every integer type


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type=` that accepts a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number in [{low}, {high}], got {text!r}")
        return value

    return parse


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False,
             off: bool = False) -> Callable[[str], float | None]:
    """An argparse `type=` that accepts a finite number in [low, high] (open at either end if asked), and with
    `off` also the words "off" and "none" (None)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float | None:
        if off and text.strip().lower() in ("off", "none"):
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not ((low < value if low_open else low <= value) and (value < high if high_open else value <= high)):
            raise argparse.ArgumentTypeError(f"must be a number in {interval}{' or off' if off else ''}, got {text!r}")
        return value  # NaN failed both comparisons above

    return parse


def redundancy_arg(text: str) -> float | str | None:
    """--redundancy: "off" or "none" (None), "policy" (the policy's default), or a cosine threshold in (-1, 1]."""
    if text.strip().lower() == "policy":
        return "policy"
    try:
        return float_in(-1, 1, low_open=True, off=True)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a number in (-1, 1], off or policy, got {text!r}") from None


def policy_arg(text: str) -> str:
    """--policy: a named policy or a spec string of parts ("knorm+pool=9"); a bad one is the parser's message."""
    from streamer.errors import ConfigError
    from streamer.kv_config import Composition

    try:
        Composition.parse(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


FPS = float_in(0, 60, low_open=True)  # frames kept per second of video
MAX_NEW_TOKENS = int_in(1, 4096)  # longest answer in tokens


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="built-in name (tiny, tiny-random, tiny-random-llava), hub id "
                                                   "or local directory")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 or float16")
    p.add_argument("--speed", default="exact", choices=SPEEDS,
                   help="exact (default) or int8: the vision tower's linear layers in int8 on the CPU, faster per "
                        "frame, answers close to exact (see BENCHMARKS section 16)")


def add_cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=int_in(8, MAX_BUDGET), default=None,
                   help=f"KV tokens kept per layer (default {DEFAULT_BUDGET}, or half the model's positions if fewer)")
    p.add_argument("--policy", default=DEFAULT_POLICY, type=policy_arg, metavar="NAME|SPEC",
                   help=f"KV cache policy: one of {', '.join(POLICIES)} (default {DEFAULT_POLICY}), or parts joined "
                        "by '+', e.g. knorm+pool=9 or combined+knorm@text (scorers: "
                        f"{', '.join(SCORERS)}; decay, prior, union, redundancy=COS, pool=K, merge=MODE)")
    p.add_argument("--merge", default=None, choices=list(MERGE_MODES), help="merge evicted KV (LOOK-M)")
    p.add_argument("--obs-select", default="last", choices=["last", "elite"],
                   help="queries that score the cache: the last N, or AirCache's elite text queries")
    p.add_argument("--layer-budget", default="uniform", choices=["uniform", "adaptive"],
                   help="same budget per layer, or AirCache's split of budget x layers by attention spread")
    p.add_argument("--chunk-slack", type=int_in(0, MAX_BUDGET), default=0,
                   help="a chunk over budget cuts this many tokens deeper, so the next chunks need no compression "
                        "(fewer compressions, fewer tokens held)")
    p.add_argument("--max-gap", type=int_in(0, 4 * MAX_BUDGET), default=0, metavar="POSITIONS",
                   help="re-rotate kept keys only once evicted tokens have left more than this many positions "
                        "empty between them (fewer re-rotations; 1-D RoPE models; default 0: at every cut)")
    p.add_argument("--redundancy", type=redundancy_arg, default="policy", metavar="COS|off|policy",
                   help="evict frame tokens that repeat the frame before them first: the cosine similarity (of "
                        "their values, same place) at which a token counts as a repeat, or off (default: the "
                        "policy's, 0.9 for combined, off for the others)")
    p.add_argument("--skip-static", type=float_in(0, 1, high_open=True, off=True), nargs="?",
                   const=SkipConfig.min_area, default=SkipConfig.min_area, metavar="AREA|off", help="do not feed frames that barely differ from the last one fed: a frame "
                   f"is fed when more than AREA of it changed (default {SkipConfig.min_area}; sensor noise, flicker "
                   f"and slow pans do not count; one frame every {SkipConfig.max_gap_s:g} s is fed regardless); "
                   "off feeds every sampled frame")


def skip_config(args: argparse.Namespace) -> SkipConfig | None:
    """The frame-skip settings the flags ask for (None: feed every sampled frame)."""
    return None if args.skip_static is None else SkipConfig(min_area=args.skip_static)


def window_config(args: argparse.Namespace, max_positions: int | None = None) -> WindowConfig:
    """The cache settings the flags ask for. Call it once without `max_positions` to fail fast on bad
    flags before loading a model, then with the model's positions for the default budget."""
    options = dict(merge=args.merge, obs_select=args.obs_select, layer_budget=args.layer_budget)
    if args.policy == "full":  # nothing is evicted: the redundancy signal has nothing to order
        return WindowConfig(policy="full", budget=None, **options)
    options.update(chunk_slack=args.chunk_slack, max_gap=args.max_gap, redundancy=args.redundancy)
    budget = args.budget
    if budget is None:
        budget = min(DEFAULT_BUDGET, (max_positions or 2 * DEFAULT_BUDGET) // 2)
    return WindowConfig(policy=args.policy, budget=budget, **options)
