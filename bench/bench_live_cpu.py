"""Can a real-size model follow a live stream on this CPU? The pipeline and `--speed int8`, measured.

SmolVLM2-256M-Video-Instruct at its hub size (random weights laid out like the hub repository, loaded through
`load_model(DIR)` as `--model DIR` does; see bench_real_models.py), float32, 2 threads, 384x216 frames, the cache
at a 10%-of-5-minutes budget filled with text first:

1. error budget of int8 against float32: image features of 8 frames (cosine, the lowest) and the first answer
   token of 3 questions after 8 frames (KL in nats, the highest);
2. a file, every frame fed (skip off): seconds per frame for the serial loop (`StreamSession.ingest`), the
   pipeline (`streamer.pipeline`: the vision tower of the next chunk beside the language model of this one) and
   the pipeline with int8; real-time factor at 1 fps = seconds per frame;
3. live, 1 fps, every frame different (skip on, it holds nothing back), int8 + pipeline, for --live-s seconds
   of wall time: the rate the pipeline settles at, the lag behind the live edge and the frames dropped over time,
   KV bytes and process RSS over time;
4. live, 2 fps, mostly static footage (a still scene with sensor noise and an object passing for 5 s every 30 s,
   or every --static-every seconds), skip on, int8 + pipeline: the same numbers;
5. --families llava,qwen: seconds per frame, exact and int8, for the rate each keeps up with.

    .venv/bin/python bench/bench_live_cpu.py [--frames 12] [--live-s 600] [--static-s 180] [--families llava,qwen]
        [--static-every 30 120] [--parts budget,file,live,static]

Writes bench/results/live_cpu.json. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm import tqdm

from bench_real_models import FRAME_HW, budget_session, noise_frames
from common import machine, read_json, setup, write_json

from streamer.kv_window import WindowConfig
from streamer.models.hub_layout import write_checkpoint
from streamer.models.registry import load_model
from streamer.pipeline import Pipeline
from streamer.session import StreamSession
from streamer.video.frame import Chunk, Frame
from streamer.video.sample import SamplerConfig, _paced
from streamer.video.skip import SkipConfig

QUESTIONS = ("What is happening?", "Is there a person on screen?", "What color is the car?")


def static_frames(seconds: float, fps: float, every: float):
    """A still scene with sensor noise; an object passes for 5 s every `every` seconds."""
    rng = np.random.default_rng(1)
    scene = rng.integers(40, 200, (*FRAME_HW, 3), dtype=np.uint8)
    for i in range(int(seconds * fps)):
        t = i / fps
        image = np.clip(scene.astype(np.int16) + rng.integers(-3, 4, scene.shape), 0, 255).astype(np.uint8)
        if t % every >= every - 5:
            x = int((t % every - (every - 5)) / 5 * (FRAME_HW[1] - 60))
            image[80:140, x:x + 60] = (220, 30, 30)
        yield Frame(image, t)


def session_at_budget(adapter, skip: bool) -> StreamSession:
    return budget_session(adapter, 2, skip=SkipConfig() if skip else None)[0]


def error_budget(exact, fast) -> dict:
    frames = list(noise_frames(8))
    feats = [torch.cat(list(a.frame_inputs(frames, encode=True)["mm_encoder_outputs"]["image"].pooler_output))
             for a in (exact, fast)]
    cos = torch.nn.functional.cosine_similarity(feats[0].flatten(0, -2), feats[1].flatten(0, -2), dim=-1)
    kls = []
    for question in QUESTIONS:
        logps = []
        for adapter in (exact, fast):
            session = StreamSession(adapter, WindowConfig(policy="combined", budget=4000), skip=None)
            for i in range(0, 8, 2):
                session.ingest(Chunk(tuple(frames[i:i + 2])))
            logits = session._forward(session._question_prompt(question, 8))
            logps.append(torch.log_softmax(logits.double(), -1))
        kls.append(float((logps[0].exp() * (logps[0] - logps[1])).sum()))
    return {"frames": 8, "feature_cosine_min": round(float(cos.min()), 5), "feature_cosine_mean": round(float(cos.mean()), 5),
            "questions": len(QUESTIONS), "first_token_kl_max": round(max(kls), 6), "first_token_kl": [round(k, 6) for k in kls],
            "budget_met": bool(cos.min() >= 0.99 and max(kls) <= 0.01)}  # fmt: skip


def file_speed(adapter, n: int, pipelined: bool) -> dict:
    session = session_at_budget(adapter, skip=False)
    frames = list(noise_frames(n + 2))
    cfg = SamplerConfig(fps=1, chunk_frames=2)
    session.ingest(Chunk(tuple(frames[:2])))  # warm-up
    start = time.perf_counter()
    if pipelined:
        with Pipeline(session, iter(frames[2:]), cfg) as pipeline:
            for item in pipeline:
                session.ingest(item)
    else:
        for i in range(2, n + 2, 2):
            session.ingest(Chunk(tuple(frames[i:i + 2])))
    per_frame = (time.perf_counter() - start) / n
    return {"frames": n, "s_per_frame": round(per_frame, 3), "real_time_factor_1fps": round(per_frame, 2)}


def live_run(adapter, frames, fps: float, seconds: float, skip: bool, desc: str) -> dict:
    session = session_at_budget(adapter, skip=skip)
    cfg = SamplerConfig(fps=fps, chunk_frames=max(1, round(2 * fps)))
    proc, series, said, began = psutil.Process(), [], [], time.perf_counter()
    bar = tqdm(total=int(seconds), desc=desc, unit="s")
    with Pipeline(session, _paced(frames), cfg, live=True) as pipeline:
        for item in pipeline:
            if line := pipeline.ingested(item, session.ingest(item)):
                said.append(line)
            wall = time.perf_counter() - began
            s = session.stats()
            series.append({"wall_s": round(wall, 1), "video_s": item.times[-1], "lag_s": round(pipeline.lag_s, 2),
                           "frames_dropped": pipeline.frames_dropped, "sampling_fps": round(pipeline.rate_fps, 3),
                           "kv_bytes": s["kv_bytes"], "rss_bytes": proc.memory_info().rss})  # fmt: skip
            bar.n = min(int(wall), int(seconds))
            bar.set_postfix(lag=f"{pipeline.lag_s:.1f}s", dropped=pipeline.frames_dropped, fps=f"{pipeline.rate_fps:.2f}")
            bar.refresh()
            if wall >= seconds:
                break
    bar.close()
    s = session.stats()
    sampled = s["frames_ingested"] + s["frames_skipped"]
    late = [p["lag_s"] for p in series if p["wall_s"] >= seconds / 2]
    return {"asked_fps": fps, "wall_s": round(series[-1]["wall_s"], 1), "video_s": series[-1]["video_s"],
            "frames_sampled": sampled, "frames_fed": s["frames_ingested"], "frames_skipped": s["frames_skipped"],
            "frames_dropped": pipeline.frames_dropped, "final_sampling_fps": round(pipeline.rate_fps, 3),
            "effective_fps": round(sampled / max(series[-1]["video_s"], 1e-9), 3),
            "lag_s_max": max(p["lag_s"] for p in series), "lag_s_final": series[-1]["lag_s"],
            "lag_s_max_second_half": max(late) if late else None,
            "kv_bytes_min_max": [min(p["kv_bytes"] for p in series), max(p["kv_bytes"] for p in series)],
            "rss_mb_min_max": [round(min(p["rss_bytes"] for p in series) / 2**20), round(max(p["rss_bytes"] for p in series) / 2**20)],
            "said": said, "series": series[:: max(1, len(series) // 60)]}  # fmt: skip


def family_speed(family: str, n: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix=f"live-{family}-") as tmp:
        write_checkpoint(family, Path(tmp))
        for speed in ("exact", "int8"):
            adapter = load_model(tmp, device="cpu", dtype="float32", speed=speed)
            run = file_speed(adapter, n, pipelined=True)
            run["keeps_up_fps"] = round(0.9 / run["s_per_frame"], 3)
            out[speed] = run
            print(family, speed, run, flush=True)
            del adapter
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12, help="frames timed per file-speed run")
    ap.add_argument("--live-s", type=float, default=600.0, help="wall seconds of the 1 fps live run (0: skip)")
    ap.add_argument("--static-s", type=float, default=180.0, help="wall seconds of the 2 fps static live run (0: skip)")
    ap.add_argument("--static-every", type=float, nargs="+", default=[30.0],
                    help="static runs: an object passes for 5 s every this many seconds (one run each)")
    ap.add_argument("--families", default="", help="also time these families exact and int8 (llava,qwen)")
    ap.add_argument("--parts", default="budget,file,live,static",
                    help="which SmolVLM parts to run; the others are kept from the last results file")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup(args.threads)
    started = machine()
    parts = set(args.parts.split(","))
    out: dict = {k: v for k, v in (read_json("live_cpu") or {}).items() if k not in ("command", "machine")}
    out.update({"frame_hw": FRAME_HW, "model": "SmolVLM2-256M-Video-Instruct layout, random weights"})
    with tempfile.TemporaryDirectory(prefix="live-smolvlm-") as tmp:
        write_checkpoint("smolvlm", Path(tmp))
        exact = load_model(tmp, device="cpu", dtype="float32")
        fast = load_model(tmp, device="cpu", dtype="float32", speed="int8")
        if "budget" in parts:
            out["error_budget"] = error_budget(exact, fast)
            print("error budget", out["error_budget"], flush=True)
        if "file" in parts:
            out["file"] = {"serial_exact": file_speed(exact, args.frames, pipelined=False),
                           "pipeline_exact": file_speed(exact, args.frames, pipelined=True),
                           "pipeline_int8": file_speed(fast, args.frames, pipelined=True)}
            print("file", out["file"], flush=True)
        del exact
        if "static" not in parts:
            args.static_s = 0
        if args.live_s and "live" in parts:
            out["live_1fps"] = live_run(fast, noise_frames(10**6), 1.0, args.live_s, skip=True, desc="live 1 fps")
            print("live 1 fps", {k: v for k, v in out["live_1fps"].items() if k != "series"}, flush=True)
        for every in args.static_every if args.static_s else ():
            key = "live_static_2fps" + ("" if every == 30 else f"_every{every:g}")
            out[key] = live_run(fast, static_frames(10**6, 2.0, every), 2.0, args.static_s, skip=True,
                                desc=f"static 2 fps, object every {every:g} s")
            out[key]["object_every_s"] = every
            print(key, {k: v for k, v in out[key].items() if k != "series"}, flush=True)
    for family in filter(None, args.families.split(",")):
        out[family] = family_speed(family, max(4, args.frames // 3))
    write_json("live_cpu", out, started)


if __name__ == "__main__":
    main()
