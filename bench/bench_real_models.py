"""Real-size speed of each supported family on this machine, with random weights (no model hub here).

For each family a checkpoint directory laid out like its hub repository is written at the hub model's
size (`streamer.models.hub_layout`: config values, special-token ids, preprocessor settings and chat
template of SmolVLM2-256M-Video-Instruct, llava-onevision-qwen2-0.5b-ov-hf and Qwen2.5-VL-3B-Instruct,
random bf16 weights). It is then loaded through `load_model(DIR)`, exactly as `--model DIR` does, and a 1 fps stream of 384x216 frames goes
through `StreamSession` with a 10% budget (10% of a 5-minute stream's tokens; the cache is first filled
to the budget with text, which costs the language model only, then frames are timed as they evict):

- seconds per frame, split into vision tower (forward hooks on the tower) and the rest (language model,
  cache compression), over the frames after the cache first reached its budget;
- real-time factor at 1 fps: seconds per frame / 1 s (above 1: a live stream falls behind);
- RSS after the run and the process's peak RSS (cumulative over the runs before it in the same process);
- the question's prefill and decode ms/token of a 16-token answer at the budget;
- float32 and bfloat16 (a family is skipped in a dtype when the machine lacks the memory for it).

    .venv/bin/python bench/bench_real_models.py [--frames 6] [--families smolvlm,llava,qwen] [--dtypes float32,bfloat16]
        [--threads 2] [--no-fill --warmup 0 --answer-tokens 4] [--device cuda]

Writes bench/results/real_models.json, keeping the earlier runs of other (family, dtype, threads, fill)
settings; each run records its own date and load average. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from common import machine, read_json, setup, write_json

from streamer.frames import Chunk
from streamer.kv_window import WindowConfig
from streamer.models.hub_layout import HUB_LAYOUTS, write_checkpoint
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.video.frame import Frame
from streamer.shared_types import Conversation
from streamer.video.skip import SkipConfig

FRAME_HW = (216, 384)  # a 16:9 frame at the sampler's default --max-side 384
STREAM_S = 300  # the budget is 10% of a 5-minute stream's tokens at 1 fps


def noise_frames(n: int, fps: float = 1.0, start: int = 0):
    """`n` frames of random pixels at `fps`, the first at `start / fps` (the same frames for the same start)."""
    rng = np.random.default_rng(start)
    for i in range(n):
        yield Frame(rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8), (start + i) / fps)


def _frames(n: int, start: int) -> Chunk:
    return Chunk(tuple(noise_frames(n, start=start)), start)


def budget_session(adapter, chunk: int, fill: bool = True, skip: SkipConfig | None = None) -> tuple[StreamSession, float]:
    """(a session whose `combined` budget is 10% of a STREAM_S-second stream's tokens, the tokens per frame inside
    a turn). `fill`: the cache is first filled to its budget with text (the language model only), not timed."""
    opened = adapter.chunk_prompt(_frames(chunk, 0), Conversation())
    tokens_per_frame = adapter.chunk_prompt(_frames(chunk, 0), opened.after).n_tokens / chunk  # inside a turn
    budget = int(0.1 * STREAM_S * tokens_per_frame)
    session = StreamSession(adapter, WindowConfig(policy="combined", budget=budget), skip=skip)
    filler = adapter.tokenizer("The camera shows a quiet street. " * 8, add_special_tokens=False)["input_ids"]
    filler = (filler * math.ceil(budget / len(filler)))[:budget]
    for i in range(0, budget if fill else 0, 512):
        session._forward_ids(filler[i : i + 512])
    return session, tokens_per_frame


def measure(path: Path, family: str, dtype: str, args: argparse.Namespace) -> dict:
    chunk, load_start = args.chunk, [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    adapter = load_model(str(path), device=args.device, dtype=dtype)
    load_s = time.perf_counter() - start
    model = adapter.model
    tower = next(m for name, m in model.named_modules() if name.endswith(("vision_model", "vision_tower", "visual")))
    vision_s = [0.0]

    def pre(*_):
        vision_s.append(time.perf_counter())

    def post(*_):
        vision_s[0] += time.perf_counter() - vision_s.pop()

    tower.register_forward_pre_hook(pre)
    tower.register_forward_hook(post)
    session, tokens_per_frame = budget_session(adapter, chunk, args.fill)  # skip off: time every frame
    budget = session.window.budget
    t = 0
    for _ in range(args.warmup):  # warm-up chunks, not timed
        session.ingest(_frames(chunk, t))
        t += chunk
    vision_s[0] = 0.0
    begin = time.perf_counter()
    for _ in range(max(1, args.frames // chunk)):
        session.ingest(_frames(chunk, t))
        t += chunk
    measured = max(1, args.frames // chunk) * chunk
    total = time.perf_counter() - begin
    per_frame = total / measured
    vis = vision_s[0] / measured
    stamps = [time.perf_counter()]
    for _ in session.ask("What is happening?", max_new_tokens=args.answer_tokens):  # about one piece per generated token
        stamps.append(time.perf_counter())
    n_answer = len(stamps) - 1
    decode_ms = 1000 * (stamps[-1] - stamps[1]) / (n_answer - 1) if n_answer > 1 else math.nan
    stats = session.stats()
    out = {
        "family": family, "stands_for": HUB_LAYOUTS[family].hub_id, "dtype": dtype, "threads": torch.get_num_threads(),
        "device": args.device,
        "cache_filled_first": args.fill, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load_start, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "load_s": round(load_s, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "tokens_per_frame_with_text": round(tokens_per_frame, 1), "budget": budget,
        "frames_measured": measured, "s_per_frame": round(per_frame, 3), "vision_s_per_frame": round(vis, 3),
        "lm_s_per_frame": round(per_frame - vis, 3), "real_time_factor_1fps": round(per_frame / 1.0, 2),
        "question_prefill_s": round(stamps[1] - stamps[0], 2) if n_answer else None,
        "decode_ms_per_token": round(decode_ms, 1), "answer_pieces": n_answer,
        "kv_tokens": stats["kv_tokens"], "kv_mb": round(stats["kv_bytes"] / 2**20, 1),
        "rss_gb": round(psutil.Process().memory_info().rss / 2**30, 2),
        "peak_rss_gb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }  # fmt: skip
    print(out, flush=True)
    del session, adapter, model
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="smolvlm,llava,qwen")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--frames", type=int, default=4, help="frames timed per run, after the cache is full")
    ap.add_argument("--chunk", type=int, default=2, help="frames per chunk")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (bench/device_check.sh)")
    ap.add_argument("--no-fill", dest="fill", action="store_false",
                    help="time from an empty cache instead of filling it to the budget with text first (for dtypes "
                         "too slow to fill, such as bfloat16 on CPUs without bf16 matmul units)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed chunks before the timed ones")
    ap.add_argument("--answer-tokens", type=int, default=16)
    args = ap.parse_args()
    setup(args.threads)
    started = machine()
    runs = []
    for family in args.families.split(","):
        with tempfile.TemporaryDirectory(prefix=f"real-{family}-") as tmp:
            path = Path(tmp)
            n_params = write_checkpoint(family, path)
            for dtype in args.dtypes.split(","):
                need = n_params * (4 if dtype == "float32" else 2) * 1.4
                avail = psutil.virtual_memory().available
                if need > avail:
                    runs.append({"family": family, "dtype": dtype, "skipped": f"needs ~{need / 2**30:.1f} GiB, "
                                 f"{avail / 2**30:.1f} GiB available"})  # fmt: skip
                    print(runs[-1], flush=True)
                    continue
                runs.append(measure(path, family, dtype, args))
    key = lambda run: tuple(run.get(k) for k in ("family", "dtype", "threads", "cache_filled_first", "device"))  # noqa: E731
    new = {key(run) for run in runs}
    earlier = [run for run in (read_json("real_models") or {}).get("runs", []) if key(run) not in new]
    write_json("real_models", {"frame_hw": FRAME_HW, "stream_s_for_budget": STREAM_S, "runs": earlier + runs}, started)


if __name__ == "__main__":
    main()
