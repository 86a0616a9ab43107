"""Command-line options shared by the CLI and the web UI: which model, and how its cache is bounded.

One place for the flags, their defaults (a budget of 2048 tokens per layer, or half the model's
positions if that is fewer) and their early validation, so `streamer.cli` and `streamer.app.ui` agree.
"""

import argparse

from streamer.kv_merge import MERGE_MODES
from streamer.kv_window import POLICIES, WindowConfig

DEFAULT_BUDGET = 2048


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="built-in name (tiny, tiny-random, tiny-random-llava), hub id "
                                                   "or local directory")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 or float16")


def add_cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=int, default=None,
                   help=f"KV tokens kept per layer (default {DEFAULT_BUDGET}, or half the model's positions if fewer)")
    p.add_argument("--policy", default="combined", choices=list(POLICIES), help="KV cache policy")
    p.add_argument("--merge", default=None, choices=list(MERGE_MODES), help="merge evicted KV (LOOK-M)")
    p.add_argument("--obs-select", default="last", choices=["last", "elite"],
                   help="queries that score the cache: the last N, or AirCache's elite text queries")
    p.add_argument("--layer-budget", default="uniform", choices=["uniform", "adaptive"],
                   help="same budget per layer, or AirCache's split of budget x layers by attention spread")
    p.add_argument("--chunk-slack", type=int, default=0,
                   help="a chunk over budget cuts this many tokens deeper, so the next chunks need no compression "
                        "(fewer compressions, fewer tokens held)")


def window_config(args: argparse.Namespace, max_positions: int | None = None) -> WindowConfig:
    """The cache settings the flags ask for. Call it once without `max_positions` to fail fast on bad
    flags before loading a model, then with the model's positions for the default budget."""
    options = dict(merge=args.merge, obs_select=args.obs_select, layer_budget=args.layer_budget)
    if args.policy == "full":
        return WindowConfig(policy="full", budget=None, **options)
    options["chunk_slack"] = args.chunk_slack
    budget = args.budget or min(DEFAULT_BUDGET, (max_positions or 2 * DEFAULT_BUDGET) // 2)
    return WindowConfig(policy=args.policy, budget=budget, **options)
