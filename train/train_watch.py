"""Stage PW: train `tiny`'s presence adapter, the weights only its standing questions run with.

    .venv/bin/python -m train.train_watch --chat-weights CHAT.safetensors --init-from models/weights/tiny.safetensors \
        --steps 60 --out train/checkpoints/tiny_pw.safetensors --results train/results/train_tiny_stage_pw.json

The chat model (`--chat-weights`: vision tower, connector, LoRA merged) stays frozen: it reads the stream
and answers the chat exactly as before. The adapter is a low-rank delta on the attention projections
(`streamer.models.watch_delta`), on only in standing-question passes. Each step streams `--clips` training
clips (world seeds below 10,000,000; 4-24 frames at 1 fps, 0-3 objects of 1-5 s, cut from anywhere in a
5-minute video) into a `StreamSession` of the chat model in chunks of 4 frames, as the product does
(full cache, no frame skip, no gradient). After each chunk, up to `--questions` presence questions about the
last 4 s (`world.presence.presence_qa`: yes about half the time, the noes mostly near misses) go through
the session's own standing-question pass (`Watching._side_by_side`: the window mask, positions, the delta
on) with gradient. The loss is the cross-entropy of the yes/no decision as `Watcher.confidence` reads it:
P(yes) / (P(yes) + P(no)) of the first answer token. AdamW, linear warm-up, cosine decay.

The output is a whole `tiny` weights file: the chat parts as given plus the "watch." factors, written
every `--save-every` steps and at the end. `--resume` continues from such a file at the step its
metadata records (the optimizer's moments start again). Deliberately not here: the chat model's own training
(train_tiny.py), held-out evaluation (bench/bench_alerts.py, bench/quality.py).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from streamer.atomic import atomic_file
from streamer.models.watch_delta import PREFIX, WatchDelta, factors_of, state_of

SEED0 = 6_000_000  # world seeds of this stage (training draws below 10,000,000; other stages draw elsewhere)
BG_SEED0 = 6_500_000  # seeds of its backgrounds
TARGETS = ("q_proj", "k_proj", "v_proj")


def delta_init(init: dict, chat: dict, rank: int, n_layers: int, shapes: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Starting factors: the LoRA of `init` minus the chat's (so the pass computes with `init`'s merged
    weights), padded with fresh rank up to `rank`; fresh ones (A random, B zero) where `init` has no LoRA."""
    factors = {}
    gen = torch.Generator().manual_seed(0)
    for i in range(n_layers):
        for name in TARGETS:
            key = f"model.text_model.layers.{i}.self_attn.{name}.weight"
            out_f, in_f = shapes[key]
            a_parts, b_parts = [], []
            if f"lora.{key}.A" in init:
                for state, sign in ((init, 1.0), (chat, -1.0)):
                    if f"lora.{key}.A" in state:
                        a_parts.append(state[f"lora.{key}.A"].float())
                        b_parts.append(sign * state[f"lora.{key}.B"].float())
            used = sum(a.shape[0] for a in a_parts)
            if used < rank:
                a_parts.append(torch.randn(rank - used, in_f, generator=gen) / math.sqrt(in_f) * 0.5)
                b_parts.append(torch.zeros(out_f, rank - used))
            factors[key] = (torch.cat(a_parts), torch.cat(b_parts, dim=1))
    return factors


def chunks_of(frames: list) -> list:
    """Frames at 1 fps in chunks of 4, as the product's sampler cuts them."""
    from streamer.frames import SamplerConfig, chunk_frames

    return list(chunk_frames(frames, SamplerConfig(fps=1.0, chunk_frames=4)))


def clip(seed: int, n_questions: int, background=None):
    """(script, chunks, checks): a training clip in chunks of 4 frames and, per chunk, its presence questions.
    With a `background` script (empty, of B seconds) the clip continues it from B s on: same scene, new objects."""
    import dataclasses

    from streamer.world.presence import presence_qa
    from streamer.world.scene import random_script

    rng = random.Random(seed * 13 + 5)
    n = rng.randint(4, 24)
    start = int(background.duration_s) if background is not None else rng.randint(0, 300 - n)
    n_events = rng.randint(0, max(0, min(3, n // 3)))
    script = random_script(seed, duration_s=start + n, n_events=n_events, event_s=(1, 5) if n >= 6 * n_events else (1, 1),
                           start_s=start)  # fmt: skip
    if background is not None:
        script = dataclasses.replace(background, duration_s=start + n, events=script.events, start_s=start)
    frames = list(script.frames(1.0))
    chunks = chunks_of(frames)
    checks = []
    for c in chunks:
        qas = {}
        for _ in range(4 * n_questions):
            qa = presence_qa(rng, script, c.frames[-1].time_s)
            qas.setdefault(qa.question, qa)
            if len(qas) == n_questions:
                break
        checks.append(list(qas.values()))
    return script, chunks, checks


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chat-weights", type=Path, required=True, help="the frozen chat model's tiny weights file")
    ap.add_argument("--init-from", type=Path, default=None, help="start the delta at this file's LoRA minus the chat's")
    ap.add_argument("--resume", type=Path, default=None, help="a file this stage wrote: go on from its step")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--clips", type=int, default=4, help="clips per step")
    ap.add_argument("--questions", type=int, default=6, help="presence questions per check")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--no-weight", type=float, default=1.0, help="loss weight of the 'no' answers")
    ap.add_argument("--background", default="0,0", help="MIN,MAX seconds of empty scene streamed before the clips")
    ap.add_argument("--background-every", type=int, default=3, help="steps that share one background")
    ap.add_argument("--save-every", type=int, default=5)
    ap.add_argument("--max-minutes", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from safetensors import safe_open
    from safetensors.torch import save_file

    from streamer.kv_window import WindowConfig
    from streamer.models.tiny import load_tiny, read_trained
    from streamer.session import StreamSession
    from streamer.watch import Watcher
    from streamer.world.scene import random_script

    adapter = load_tiny(weights=args.chat_weights)
    model = adapter.model
    for p in model.parameters():
        p.requires_grad_(False)
    chat, _, _ = read_trained(args.chat_weights)
    chat = {k: v for k, v in chat.items() if not k.startswith(PREFIX)}
    with safe_open(str(args.chat_weights), framework="pt") as f:
        meta = dict(f.metadata() or {})
    start_step = 0
    shapes = {k + ".weight": tuple(m.weight.shape) for k, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    n_layers = model.config.text_config.num_hidden_layers
    if args.resume:
        factors = factors_of(read_trained(args.resume)[0])
        with safe_open(str(args.resume), framework="pt") as f:
            start_step = int(json.loads((f.metadata() or {}).get("watch", "{}")).get("step", 0))
    else:
        init = read_trained(args.init_from)[0] if args.init_from else {}
        factors = delta_init(init, chat, args.rank, n_layers, shapes)
    params = {k: (torch.nn.Parameter(a.clone()), torch.nn.Parameter(b.clone())) for k, (a, b) in factors.items()}
    adapter.watch_delta = WatchDelta(model, params)
    opt = torch.optim.AdamW([t for ab in params.values() for t in ab], lr=args.lr, weight_decay=0.0)
    watcher = Watcher(adapter.tokenizer)
    yes_ids, no_ids = torch.tensor(watcher.yes_ids), torch.tensor(watcher.no_ids)
    log = {"args": {k: str(v) for k, v in vars(args).items()}, "steps": []}

    def save(step: int) -> None:
        state = {**chat, **state_of(params)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(args.out) as tmp:
            save_file(state, str(tmp), metadata={**meta, "watch": json.dumps({"step": step, "stage": "PW"})})
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(log, indent=1))

    bg_min, bg_max = (int(x) for x in args.background.split(","))
    background = None
    began = time.perf_counter()
    for step in range(start_step, args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        total, n, right, right_yes, n_yes = 0.0, 0, 0, 0, 0
        if bg_max and (step - start_step) % args.background_every == 0:  # a new long past for the next steps
            rng = random.Random(BG_SEED0 + step)
            background = random_script(BG_SEED0 + step, duration_s=rng.randint(bg_min, bg_max), n_events=0)
            session = StreamSession(adapter, WindowConfig(policy="full", budget=None), skip=None)
            with torch.no_grad():
                for chunk in chunks_of(list(background.frames(1.0))):
                    session.ingest(chunk)
            past = session.cache.checkpoint(), session.conv
        for seed in range(SEED0 + step * args.clips, SEED0 + (step + 1) * args.clips):
            _, chunks, checks = clip(seed, args.questions, background)
            if background is None:
                session = StreamSession(adapter, WindowConfig(policy="full", budget=None), skip=None)
            else:
                session.cache.restore(past[0])
                session.conv = past[1]
            for chunk, qas in zip(chunks, checks):
                with torch.no_grad():
                    session.ingest(chunk)
                if not qas:
                    continue
                prompts = [session._question_prompt(qa.question, 8) for qa in qas]
                with session.watch_passes():
                    logits = torch.stack(session._side_by_side(prompts, session._watch_since(), grad=True))
                lse_yes, lse_no = logits[:, yes_ids].logsumexp(-1), logits[:, no_ids].logsumexp(-1)
                log_p_yes = lse_yes - torch.logaddexp(lse_yes, lse_no)
                log_p_no = lse_no - torch.logaddexp(lse_yes, lse_no)
                target = torch.tensor([qa.answer == "yes" for qa in qas])
                weight = torch.where(target, 1.0, args.no_weight)
                loss = -(torch.where(target, log_p_yes, log_p_no) * weight).sum()
                (loss / (args.clips * 4 * args.questions)).backward()
                total += float(loss.detach())
                n += len(qas)
                said = log_p_yes.detach() >= math.log(0.5)
                right += int((said == target).sum())
                right_yes += int((said & target).sum())
                n_yes += int(target.sum())
        torch.nn.utils.clip_grad_norm_([t for ab in params.values() for t in ab], 1.0)
        opt.step()
        row = {"step": step + 1, "loss": total / max(n, 1), "answers": n, "right": right / max(n, 1),
               "yes_right": right_yes / max(n_yes, 1), "no_right": (right - right_yes) / max(n - n_yes, 1),
               "lr": lr, "seconds": round(time.perf_counter() - began, 1)}
        log["steps"].append(row)
        print(json.dumps(row), flush=True)
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save(step + 1)
        if time.perf_counter() - began > args.max_minutes * 60:
            save(step + 1)
            print(f"stopped after {args.max_minutes} min at step {step + 1}; --resume {args.out} goes on", flush=True)
            break


if __name__ == "__main__":
    main()
