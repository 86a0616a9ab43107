"""Train the built-in `tiny` model on the synthetic world; reproducible from a seed, CPU-only is fine.

    .venv/bin/python -m train.train_tiny --out models/weights/tiny.safetensors --results train/results/train_tiny.json

Recipe (docs/training.md has the numbers):
- Stage A, no language model: the vision tower and connector learn to see. Auxiliary linear heads on
  the mean of the 9 connector outputs classify colour, shape and digit (or "none" on empty frames);
  a small penalty keeps the outputs at the RMS of SmolLM2's token embeddings. Cheap: thousands of
  frames a minute.
- Stage B, end to end through SmolLM2-135M-Instruct (bf16 autocast on CPU): the exact prompts the
  SmolVLM adapter feeds at inference, with each answer as " answer<end_of_utterance>" and the loss on
  the answer tokens only. Trained: vision tower, connector, the four new special-token embedding rows,
  and LoRA factors (rank r) on the attention projections in `lora_targets` of all 30 layers; the rest
  of the LM is frozen. Batch kinds follow `schedule` in rotation: frames (16 single frames), short
  clips (4-14 frames from anywhere in a 5-minute timeline) and long sparse clips (one clip of
  `long_frames` frames with up to `long_events` objects); `*_questions` > 1 asks several different
  questions about the same frames as a chat. The stage-A auxiliary loss stays on with `b_aux_batch`
  fresh frames a step.
- Stage C is this loop again from a stage-B checkpoint (--resume), with chats and long clips of
  several objects at lower learning rates (the command is in docs/training.md).
- Stage D continues from stage C with spliced batches (schedule letter "s") between frame batches: one
  5-minute background video (no objects) goes through the LM once without gradient, then
  `splice_branches` times one or two objects are spliced into it at random times. Only the frames
  near the objects are computed (with gradient, over the background's cached keys and values); the
  rest of the cache is the background's, and each question is asked on its own right after the
  frames. A 300-frame needle example then costs a few seconds instead of a 50-second step.
- The trained parts are saved (fp32 safetensors) to --out every `save_every` steps and at the end, and
  a JSON of settings, losses and timings to --results.

Deliberately not here: held-out evaluation (eval_tiny.py), the world (streamer/world.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from streamer.models.smolvlm import SmolVLMAdapter
from streamer.models.tiny import NEW_ROWS_KEY, TinySettings, build_tiny, load_language_model, read_trained, save_trained
from streamer.vocab import Conversation
from streamer.frames import Chunk
from streamer.world.scene import COLOURS, DIGITS, SHAPES, random_script, single_frame
from train.data import HELD_OUT_SEED, Example, clip_example, collate, pixel_batch, single_example, spliced_example

log = logging.getLogger("train_tiny")

BATCH_KINDS = {"f": "frame", "c": "clip", "l": "long", "s": "spliced"}  # TrainConfig.schedule letters


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    seed: int = 0  # drives the world seeds, the initial weights and the batch order
    threads: int = 2  # torch CPU threads
    # stage A: vision tower + connector with auxiliary heads
    a_steps: int = 3500
    a_batch: int = 64
    a_lr: float = 2e-3
    # stage B: end to end through the frozen LM
    b_steps: int = 600
    schedule: str = "ffcffl"  # batch kinds in rotation: f = frames, c = short clips, l = one long clip
    b_batch: int = 16  # single-frame examples per frame batch
    frame_questions: int = 1  # questions per frame, asked one after the other (a chat when > 1)
    clip_batch: int = 4  # clips per clip batch
    clip_frames: tuple[int, int] = (4, 14)
    clip_questions: int = 1
    long_frames: tuple[int, int] = (40, 120)  # frames of a long clip, with 1 to long_events events of 2-4 s
    long_events: int = 2  # most events in a long clip (at most 5: colours and digits differ)
    long_questions: int = 1  # questions about one long clip, asked one after the other
    splice_branches: int = 12  # spliced batches: event sets spliced into one background video of long_frames[1] frames
    b_lr_vision: float = 3e-4
    b_lr_adapt: float = 1e-3  # LoRA factors and new token rows
    warmup: int = 20
    b_start: int = 0  # first stage-B step (with --resume: continue a run from its checkpoint at this step)
    b_aux_batch: int = 48  # frames per step for the stage-A auxiliary loss kept on during stage B (0: off)
    b_aux_weight: float = 1.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    bf16: bool = True  # autocast the LM to bfloat16 (fast on CPUs with AVX512-BF16/AMX, and on GPUs)
    max_minutes: float = 57.0  # stage B stops early (and says so) past this wall time since the start
    save_every: int = 50
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("threads", "a_batch", "b_batch", "clip_batch", "splice_branches", "lora_rank", "save_every", "log_every", "long_events",
                     "frame_questions", "clip_questions", "long_questions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.schedule or set(self.schedule) - set(BATCH_KINDS):
            raise ValueError(f"schedule must be a non-empty string of {sorted(BATCH_KINDS)}, got {self.schedule!r}")
        for name in ("a_steps", "b_steps", "warmup", "b_aux_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.long_events > 5:
            raise ValueError(f"long_events must be at most 5 (distinct colours), got {self.long_events}")
        for name, low in (("clip_frames", 1), ("long_frames", 10)):
            lo, hi = getattr(self, name)
            if not low <= lo <= hi <= 300:
                raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= 300, got {(lo, hi)}")
        if not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes!r}")


class LoRALinear(nn.Module):
    """y = base(x) + scale * x A^T B^T, with A (r, in) random and B (out, r) zero at the start."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.t().to(x.dtype)) @ self.B.t().to(x.dtype) * self.scale


def add_lora(text_model: nn.Module, cfg: TrainConfig) -> dict[str, LoRALinear]:
    """Wrap the target projections of every layer; returns {weight key in the SmolVLM model: module}."""
    wrapped = {}
    for i, layer in enumerate(text_model.layers):
        for name in cfg.lora_targets:
            base = getattr(layer.self_attn, name)
            module = LoRALinear(base, cfg.lora_rank, cfg.lora_alpha)
            setattr(layer.self_attn, name, module)
            wrapped[f"model.text_model.layers.{i}.self_attn.{name}.weight"] = module
    return wrapped


def lora_factors(wrapped: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """{"lora.<weight key>.A": scale * A, "...B": B}: what models.tiny merges as W += B @ A."""
    out = {}
    for key, m in wrapped.items():
        out[f"lora.{key}.A"] = m.A.detach() * m.scale
        out[f"lora.{key}.B"] = m.B.detach()
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, results: Path, settings: TinySettings | None = None) -> None:
        self.cfg, self.out, self.results_path = cfg, out, results
        self.start = time.perf_counter()
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.settings = settings or TinySettings()
        lm = load_language_model()
        self.n_old = lm.config.vocab_size
        model, tokenizer, image_processor = build_tiny(self.settings, seed=cfg.seed, language_model=lm)
        del lm
        self.model = model.to(self.device)
        self.adapter = SmolVLMAdapter("tiny-train", self.model, tokenizer, image_processor)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.vision_params = [p for n, p in self.model.named_parameters() if n.startswith(("model.vision_model.", "model.connector."))]
        for p in self.vision_params:
            p.requires_grad_(True)
        if cfg.bf16:  # autocast would cast these frozen weights to bf16 at every call: do it once
            for m in self.model.model.text_model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.data = m.weight.data.to(torch.bfloat16)
        self.embed = self.model.model.text_model.embed_tokens.weight  # (V, D), frozen
        self.emb_rms = float(self.embed[: self.n_old].pow(2).mean().sqrt())
        self.history: dict[str, list] = {"stage_a": [], "stage_b": []}
        self.notes: list[str] = []
        log.info("built the model in %.1f s on %s (%d threads)", self.elapsed(), self.device, cfg.threads)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def seed(self) -> int:
        return self.rng.randrange(HELD_OUT_SEED)

    # ---- shared ----------------------------------------------------------------------------------

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) pixels -> (n, tokens_per_frame, D) connector outputs."""
        side = self.settings.image_size // self.settings.patch_size
        patch_mask = torch.ones((pixels.shape[0], side, side), dtype=torch.bool, device=self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            hidden = self.model.model.vision_model(pixel_values=pixels, patch_attention_mask=patch_mask).last_hidden_state
            return self.model.model.connector(hidden).float()  # (n, 9, D)

    # ---- stage A ---------------------------------------------------------------------------------

    def stage_a(self) -> None:
        cfg = self.cfg
        d = self.embed.shape[1]
        self.heads = nn.ModuleDict({
            "colour": nn.Linear(d, len(COLOURS) + 1), "shape": nn.Linear(d, len(SHAPES) + 1),
            "digit": nn.Linear(d, len(DIGITS) + 1),
        }).to(self.device)  # fmt: skip
        opt = torch.optim.AdamW(self.vision_params + list(self.heads.parameters()), lr=cfg.a_lr, weight_decay=0.01)
        for step in range(cfg.a_steps):
            lr = cfg.a_lr * min(1.0, (step + 1) / max(1, cfg.warmup)) * _cosine(step, cfg.a_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, rms, acc = self.aux_loss(cfg.a_batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vision_params, 1.0)
            opt.step()
            row = {"step": step, "loss": round(loss.item(), 4), "rms": round(rms, 4),
                   **{f"acc_{k}": round(v, 3) for k, v in acc.items()}, "t": round(self.elapsed(), 1)}  # fmt: skip
            self.history["stage_a"].append(row)
            if step % cfg.log_every == 0 or step == cfg.a_steps - 1:
                log.info("A %4d loss %.3f rms %.3f acc %s lr %.2g t %.0fs", step, loss.item(), rms,
                         {k: round(v, 2) for k, v in acc.items()}, lr, self.elapsed())  # fmt: skip
        self.save()

    def aux_loss(self, n: int) -> tuple[torch.Tensor, float, dict[str, float]]:
        """Auxiliary vision loss on `n` fresh frames: colour/shape/digit heads on the mean connector output,
        plus a penalty keeping the outputs at the RMS of the LM's token embeddings. Returns (loss, rms, acc)."""
        vocab = {"colour": list(COLOURS), "shape": list(SHAPES), "digit": list(DIGITS)}
        images, labels = [], {k: [] for k in self.heads}
        for _ in range(n):
            frame, script = single_frame(self.seed(), p_empty=0.05)
            images.append(frame.image)
            shown = script.visible(frame.time_s)
            for k in self.heads:
                value = getattr(shown[0].obj, k) if shown else None
                labels[k].append(vocab[k].index(value) if value is not None else len(vocab[k]))
        pixels = pixel_batch(self.adapter, images).to(self.device)
        feats = self.image_features(pixels)  # (n, 9, D)
        pooled = feats.mean(1)
        loss = feats.new_zeros(())
        acc = {}
        for k, head in self.heads.items():
            target = torch.tensor(labels[k], device=self.device)
            logits = head(pooled)
            loss = loss + F.cross_entropy(logits, target)
            acc[k] = float((logits.argmax(-1) == target).float().mean())
        rms = feats.pow(2).mean().sqrt()
        return loss + (rms / self.emb_rms - 1.0) ** 2, rms.item(), acc

    # ---- stage B ---------------------------------------------------------------------------------

    def stage_b(self, resume: Path | None = None) -> None:
        """Stage B from step cfg.b_start; `resume`: a checkpoint of this recipe saved at that step (the
        optimizer state restarts with a fresh warm-up, the data seeds with a new stream)."""
        cfg = self.cfg
        text_model = self.model.model.text_model
        torch.manual_seed(cfg.seed + 1)
        self.lora = add_lora(text_model, cfg)
        self.lora_params = [p for m in self.lora.values() for p in (m.A, m.B)]
        if not hasattr(self, "heads"):
            self.heads = nn.ModuleDict()
        if resume is not None:
            state, _, _ = read_trained(resume)
            parts = {k: v for k, v in state.items() if k.startswith(("model.vision_model.", "model.connector."))}
            self.model.load_state_dict(parts, strict=False)
            with torch.no_grad():
                self.embed[self.n_old:] = state[NEW_ROWS_KEY]
                for key, m in self.lora.items():
                    if f"lora.{key}.A" not in state:  # a target the checkpoint has no factors for starts at zero
                        continue
                    m.A.copy_(state[f"lora.{key}.A"] / m.scale)
                    m.B.copy_(state[f"lora.{key}.B"])
            self.rng = random.Random(cfg.seed * 1000 + cfg.b_start)
            self.notes.append(f"stage B resumed at step {cfg.b_start} from {resume}")
            log.info(self.notes[-1])
        self.new_rows = nn.Parameter(self.embed[self.n_old:].detach().clone())  # (n_new, D)
        groups = [
            {"params": self.vision_params + list(self.heads.parameters()), "lr": cfg.b_lr_vision, "base_lr": cfg.b_lr_vision},
            {"params": self.lora_params + [self.new_rows], "lr": cfg.b_lr_adapt, "base_lr": cfg.b_lr_adapt},
        ]
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        pad = self.adapter.tokenizer.pad_token_id
        pad = pad if pad is not None else self.adapter.eos_token_ids[-1]
        for step in range(cfg.b_start, cfg.b_steps):
            if self.elapsed() > cfg.max_minutes * 60:
                self.notes.append(f"stage B stopped at step {step} of {cfg.b_steps}: past max_minutes={cfg.max_minutes}")
                log.warning(self.notes[-1])
                break
            factor = min(1.0, (step - cfg.b_start + 1) / max(1, cfg.warmup)) * _cosine(step, cfg.b_steps)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            kind = BATCH_KINDS[cfg.schedule[step % len(cfg.schedule)]]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            if kind == "spliced":  # branches backpropagate one by one
                loss, exact, answers, tokens = self.spliced_backward()
            else:
                examples = self.examples(kind)
                loss_t, exact = self.lm_loss(examples, pad)
                loss_t.backward()
                loss, answers = loss_t.item(), sum(len(e.targets) for e in examples)
                tokens = sum(len(e.input_ids) for e in examples)
            aux, acc = torch.zeros(()), {}
            if cfg.b_aux_batch:
                aux, _, acc = self.aux_loss(cfg.b_aux_batch)
                (cfg.b_aux_weight * aux).backward()
            torch.nn.utils.clip_grad_norm_(self.vision_params + self.lora_params + [self.new_rows], 1.0)
            opt.step()
            row = {"step": step, "kind": kind, "loss": round(loss, 4), "exact": round(exact, 3),
                   "aux": round(aux.item(), 4), **{f"acc_{k}": round(v, 3) for k, v in acc.items()},
                   "answers": answers, "tokens": tokens,
                   "s": round(time.perf_counter() - t0, 2), "t": round(self.elapsed(), 1)}  # fmt: skip
            self.history["stage_b"].append(row)
            if step % cfg.log_every == 0 or step == cfg.b_steps - 1:
                log.info("B %4d %s loss %.3f exact %.2f aux %.3f %s (%d tok, %.1fs/step) t %.0fs", step,
                         kind, loss, exact, aux.item(),
                         {k: round(v, 2) for k, v in acc.items()}, row["tokens"], row["s"], self.elapsed())  # fmt: skip
            if (step + 1) % cfg.save_every == 0:
                self.save()
        self.save()

    def weight_matrix(self) -> torch.Tensor:
        """(V, D) embedding / output matrix with the trainable new rows."""
        return torch.cat([self.embed[: self.n_old], self.new_rows], dim=0)

    def examples(self, kind: str) -> list[Example]:
        """A fresh batch of `kind` ("frame", "clip" or "long")."""
        cfg = self.cfg
        if kind == "long":
            return [clip_example(self.adapter, self.seed(), cfg.long_frames, max_events=cfg.long_events, event_s=(2, 4),
                                 n_questions=cfg.long_questions, kind=kind)]  # fmt: skip
        if kind == "clip":
            return [clip_example(self.adapter, self.seed(), cfg.clip_frames, n_questions=cfg.clip_questions)
                    for _ in range(cfg.clip_batch)]  # fmt: skip
        return [single_example(self.adapter, self.seed(), n_questions=cfg.frame_questions) for _ in range(cfg.b_batch)]

    def lm_loss(self, examples, pad: int) -> tuple[torch.Tensor, float]:
        """Cross-entropy on the answer tokens; also the fraction of answers whose tokens are all right."""
        batch = {k: v.to(self.device) for k, v in collate(examples, pad).items()}
        embeds = self.input_embeds(batch["input_ids"], self.frame_features([im for e in examples for im in e.images]))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            # no attention mask: the batch is right-padded, so under the causal mask no real token sees a
            # pad, and SDPA's plain causal path is much faster on long clips than an explicit mask
            hidden = self.model.model.text_model(inputs_embeds=embeds).last_hidden_state
        return self.answer_loss(hidden, batch["labels"])

    def branch_loss(self, ex: Example, background: list, feats: torch.Tensor) -> tuple[torch.Tensor, float]:
        """lm_loss of one branch example (chat=False) over `background` (see branch_hidden), `feats` its
        frames' features (n_frames, 9, D)."""
        embeds = self.input_embeds(torch.tensor([ex.input_ids], device=self.device), feats)  # (1, T, D)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            hidden, labels = branch_hidden(self.model.model.text_model, embeds, ex, background)
        return self.answer_loss(hidden, labels)

    def spliced_backward(self) -> tuple[float, float, int, int]:
        """One spliced batch: a background video of long_frames[1] frames goes through the LM once
        without gradient; then splice_branches times, 1 to long_events events are spliced into it
        (their frames' keys and values computed with gradient over the background's cache) and up to
        long_questions questions asked about them, each branch's loss backpropagated at once (so only one
        branch's graph is held). Returns (mean loss, fraction of answers right, answers, tokens)."""
        cfg, tm = self.cfg, self.model.model.text_model
        background = random_script(self.seed(), duration_s=cfg.long_frames[1], n_events=0)
        frames = list(background.frames(1.0))
        prompt = self.adapter.chunk_prompt(Chunk(tuple(frames)), Conversation())
        ids = prompt.input_ids.to(self.device)  # (1, n)
        cache = DynamicCache(config=tm.config)
        with torch.no_grad():  # the prompt's pixels: (1, n_frames, 3, S, S) -> features (n_frames, 9, D)
            feats = self.image_features(prompt.inputs["pixel_values"][0].to(self.device))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                tm(inputs_embeds=self.input_embeds(ids, feats), past_key_values=cache, use_cache=True)
        kv = [(layer.keys, layer.values) for layer in cache.layers]  # (1, H_kv, n, D) each
        losses, right, answers, tokens = [], 0.0, 0, 0
        for _ in range(cfg.splice_branches):
            ex = spliced_example(self.adapter, self.seed(), background, cfg.long_events, (2, 4), cfg.long_questions)
            if ex.input_ids[: ids.shape[1]] != ids[0].tolist():
                raise RuntimeError("a spliced example's frames must be the background's tokens")
            near_times = set(torch.tensor(ex.times, dtype=torch.float64)[ex.near_events()].tolist())  # NaN (text) matches no frame
            spliced = [i for i, f in enumerate(ex.frames) if f.time_s in near_times]
            branch_feats = feats.clone()
            branch_feats[spliced] = self.frame_features([ex.frames[i].image for i in spliced])
            loss, exact = self.branch_loss(ex, kv, branch_feats)
            (loss / cfg.splice_branches).backward()
            losses.append(loss.item())
            right += exact * len(ex.targets)
            answers, tokens = answers + len(ex.targets), tokens + len(ex.input_ids) - ids.shape[1]
        return sum(losses) / len(losses), right / answers, answers, tokens + ids.shape[1]

    def frame_features(self, images: list) -> torch.Tensor:
        """(n, tokens_per_frame, D) connector outputs for (H, W, 3) uint8 RGB frames."""
        return self.image_features(pixel_batch(self.adapter, images).to(self.device))

    def input_embeds(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, D) input embeddings, `feats` (n_images, 9, D) in the image
        placeholders in the order they appear."""
        embeds = F.embedding(ids, self.weight_matrix())  # (B, T, D)
        image_mask = (ids == self.adapter.image_token_id).unsqueeze(-1)  # (B, T, 1)
        return embeds.masked_scatter(image_mask, feats.reshape(-1, feats.shape[-1]).to(embeds.dtype))

    def answer_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Cross-entropy of hidden (B, T, D) against labels (B, T) (-100 off the answers); also the
        fraction of answers (runs of labelled tokens) whose tokens are all right."""
        w = self.weight_matrix()
        target = labels[:, 1:]  # (B, T-1): token t+1 is predicted at t
        sel = target != -100
        logits = hidden[:, :-1][sel].float() @ w.t()  # (n_answer_tokens, V)
        loss = F.cross_entropy(logits, target[sel])
        with torch.no_grad():
            wrong = torch.zeros_like(target, dtype=torch.bool)
            wrong[sel] = logits.argmax(-1) != target[sel]
            # an answer is a run of labelled tokens; it is right when none of its tokens is wrong
            starts = sel & ~torch.cat([torch.zeros_like(sel[:, :1]), sel[:, :-1]], dim=1)  # (B, T-1) answer starts
            answer_id = starts.flatten().cumsum(0).view_as(sel)  # which answer each token belongs to
            bad = torch.zeros(int(starts.sum()) + 1, dtype=torch.bool, device=sel.device)
            bad[answer_id[wrong]] = True
        n = int(starts.sum())
        return loss, (n - int(bad[1:].sum())) / n

    # ---- output ----------------------------------------------------------------------------------

    def save(self) -> None:
        if hasattr(self, "new_rows"):
            with torch.no_grad():
                self.embed[self.n_old:] = self.new_rows.detach()
        lora = lora_factors(self.lora) if hasattr(self, "lora") else {}
        extra = {"train_config": _jsonable(asdict(self.cfg)), "steps_b": self.cfg.b_start + len(self.history["stage_b"])}
        save_trained(self.model, self.settings, self.n_old, self.out, extra=extra, lora=lora)
        self.write_results()
        log.info("saved %s (%.1f MB) at %.0fs", self.out, self.out.stat().st_size / 1e6, self.elapsed())

    def write_results(self) -> None:
        b = self.history["stage_b"]
        summary = {
            "config": _jsonable(asdict(self.cfg)),
            "settings": asdict(self.settings),
            "tokens_per_frame": self.settings.tokens_per_frame,
            "trained_parameters": {
                "vision_and_connector": sum(p.numel() for p in self.vision_params),
                "lora": sum(p.numel() for p in getattr(self, "lora_params", [])),
                "new_token_rows": int(self.embed[self.n_old:].numel()),
            },
            "device": str(self.device),
            "wall_seconds": round(self.elapsed(), 1),
            "stage_a_final": self.history["stage_a"][-1] if self.history["stage_a"] else None,
            "stage_b_steps_done": len(b),
            "stage_b_last50_loss": _mean([r["loss"] for r in b[-50:]]),
            **{f"stage_b_last100_exact_{k}": _mean([r["exact"] for r in b[-100:] if r["kind"] == k]) for k in BATCH_KINDS.values()},
            "notes": self.notes,
            "history": self.history,
        }
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(self.results_path)


def branch_hidden(
    text_model: nn.Module, embeds: torch.Tensor, ex: Example, background: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A branch example (chat=False) with input embeddings (1, T, D): its frames go through a KV cache
    (segmented_hidden: frames near events computed, the rest copied from `background`), then all its
    questions in one packed forward over that cache, each seeing the frames and itself only (a block
    mask, and positions that restart after the frames). Returns hidden (1, Q, D) and labels (1, Q) of the
    packed questions (-100 off the answers), ready for the answer loss."""
    ids = torch.tensor(ex.input_ids, device=embeds.device)  # (T,)
    n, t = ex.starts[0], ids.numel()
    cache = DynamicCache(config=text_model.config)
    segmented_hidden(text_model, embeds[:, :n], ex.near_events()[:n].to(embeds.device), background, cache)
    branch = torch.zeros(t - n, dtype=torch.long, device=embeds.device)  # (Q,) which question a token is in
    for a in ex.starts[1:]:
        branch[a - n :] += 1
    pos = torch.arange(n, t, device=embeds.device)  # (Q,)
    pos -= torch.tensor(ex.starts, device=embeds.device)[branch] - n  # each question starts right after the frames
    own = (branch[:, None] == branch[None, :]) & (pos[:, None] >= pos[None, :])  # (Q, Q)
    mask = torch.cat([own.new_ones(t - n, n), own], dim=1)[None, None]  # (1, 1, Q, n + Q) True: may attend
    labels = torch.full((1, t - n), -100, dtype=torch.long, device=embeds.device)
    for a, b in ex.targets:
        labels[0, a - n : b - n] = ids[a:b]
    out = text_model(inputs_embeds=embeds[:, n:], attention_mask=mask, position_ids=pos[None], past_key_values=cache, use_cache=True)
    return out.last_hidden_state, labels


def segmented_hidden(
    text_model: nn.Module, embeds: torch.Tensor, grad: torch.Tensor, background: list[tuple[torch.Tensor, torch.Tensor]],
    cache: DynamicCache | None = None,
) -> torch.Tensor:
    """Last hidden states (1, T, D) of `text_model` over `embeds` (1, T, D), fed run by run through a KV
    cache (`cache`, left holding all T tokens). Runs where `grad` (T,) is True are computed, with
    gradient, over the cache so far; the others are copied from `background`: per layer (keys, values)
    (1, H_kv, >= T, D) of a forward pass without gradient over a sequence with the same tokens in those
    runs (their hidden states come back as zeros). So the few frames near events cost a forward and
    backward pass each, and the background's frames are shared by every example spliced into it."""
    cache = cache if cache is not None else DynamicCache(config=text_model.config)
    cuts = [0] + (torch.nonzero(grad[1:] != grad[:-1]).flatten() + 1).tolist() + [grad.numel()]
    hidden = []
    for a, b in zip(cuts, cuts[1:]):
        if grad[a]:
            hidden.append(text_model(inputs_embeds=embeds[:, a:b], past_key_values=cache, use_cache=True).last_hidden_state)
        else:
            for layer, (k, v) in zip(cache.layers, background):
                layer.update(k[:, :, a:b], v[:, :, a:b])  # (1, H_kv, b - a, D) appended
            hidden.append(embeds.new_zeros(1, b - a, embeds.shape[-1]))
    return torch.cat(hidden, dim=1)


def _cosine(step: int, total: int, floor: float = 0.1) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# how a setting's annotation is parsed from the command line; settings of other types are not flags
_FLAG_TYPES = {
    "int": int, "float": float, "str": str, "bool": lambda s: s.lower() in ("1", "true", "yes"),
    "tuple[int, int]": lambda s: tuple(int(x) for x in s.split(",")),  # "40,120"
    "tuple[str, ...]": lambda s: tuple(s.split(",")),  # "q_proj,v_proj"
}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the built-in `tiny` model on the synthetic world.")
    p.add_argument("--out", type=Path, default=Path("models/weights/tiny.safetensors"))
    p.add_argument("--results", type=Path, default=Path("train/results/train_tiny.json"))
    p.add_argument("--resume", type=Path, default=None, help="skip stage A; continue stage B from this checkpoint")
    for f in fields(TrainConfig) + fields(TinySettings):  # every setting is a flag: --a-steps, --patch-size, ...
        kind = _FLAG_TYPES.get(f.type)
        if kind is not None:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
    settings = TinySettings(**{f.name: getattr(args, f.name) for f in fields(TinySettings)})
    trainer = Trainer(cfg, args.out, args.results, settings)
    if args.resume is None:
        trainer.stage_a()
    trainer.stage_b(args.resume)
    log.info("done in %.1f min", trainer.elapsed() / 60)


if __name__ == "__main__":
    main()
