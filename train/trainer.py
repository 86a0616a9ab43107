"""The training loop of `tiny`: the model under training, stage A, stage B's batches and steps, saving.

`Trainer` follows the recipe of train_tiny.py (which holds the command line): stage A trains the vision
tower and connector with auxiliary heads (`stage_a`, `aux_loss`); stage B (and C and D, the same loop
from a checkpoint) trains them with the LoRA factors and the new token rows end to end through the
frozen LM, one batch kind per step in the rotation of `TrainConfig.schedule` (`examples`, `lm_loss`,
`spliced_backward`). Every `save_every` steps and at the end the trained parts go to the checkpoint and
a JSON of settings, losses and timings to the results file, both written atomically.

Deliberately not here: the settings and flags (config.py), the adapters (lora.py), the tensor functions
of a step (losses.py), the spliced forward (splice.py), the examples (data.py), evaluation (bench/quality.py).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from streamer.atomic import atomic_file
from streamer.frames import Chunk
from streamer.models.tiny import (
    NEW_ROWS_KEY, TRAINED_PREFIXES, TinyAdapter, TinySettings, build_tiny, load_language_model, read_trained, save_trained,
)
from streamer.shared_types import Conversation
from streamer.world.scene import random_script, single_frame
from train.config import BATCH_KINDS, TrainConfig
from train.data import (
    CLIP_KIND_WEIGHTS, HELD_OUT_SEED, SLOT_WORDS, Example, clip_example, collate, presence_example, pixel_batch, single_example, slot_labels, slot_word_ids,
    spliced_example,
)  # fmt: skip
from train.lora import add_lora, load_lora_factors, lora_factors
from train.losses import answer_loss, input_embeds, word_loss
from train.splice import branch_hidden

log = logging.getLogger(__name__)


class Trainer:
    """One training run: builds the model (`build_tiny`), trains it in stage A (`stage_a`) and stage B
    (`stage_b`, also stages C and D with other settings), saves the trained parts to `out` and the JSON
    of settings, losses and timings to `results`."""

    def __init__(self, cfg: TrainConfig, out: Path, results: Path, settings: TinySettings | None = None) -> None:
        self.cfg, self.out, self.results_path = cfg, out, results
        self.start = time.perf_counter()
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.kind_weights = CLIP_KIND_WEIGHTS | cfg.kind_weight_overrides()  # question templates' draw weights
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.settings = settings or TinySettings()
        lm = load_language_model()
        self.n_old = lm.config.vocab_size
        model, tokenizer, image_processor = build_tiny(self.settings, seed=cfg.seed, language_model=lm)
        del lm
        self.model = model.to(self.device)
        self.adapter = TinyAdapter("tiny-train", self.model, tokenizer, image_processor)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.vision_params = [p for n, p in self.model.named_parameters() if n.startswith(TRAINED_PREFIXES)]
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

    def load_parts(self, path: Path) -> None:
        """Vision tower, connector and new token rows from a checkpoint of this recipe (LoRA factors:
        stage_b)."""
        state, _, _ = read_trained(path)
        parts = {k: v for k, v in state.items() if k.startswith(TRAINED_PREFIXES)}
        self.model.load_state_dict(parts, strict=False)
        with torch.no_grad():
            self.embed[self.n_old:] = state[NEW_ROWS_KEY]

    def stage_a(self) -> None:
        cfg = self.cfg
        d = self.embed.shape[1]
        self.heads = nn.ModuleDict() if cfg.aux_words else nn.ModuleDict({
            k: nn.Linear(d, len(words) + 1) for k, words in SLOT_WORDS.items()
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
        """Auxiliary vision loss on `n` fresh frames (`aux_words`: word_loss; else colour/shape/digit heads
        on the mean connector output plus a penalty keeping the outputs at the RMS of the LM's token
        embeddings). Returns (loss, rms, acc)."""
        images, labels = [], {k: [] for k in SLOT_WORDS}
        for _ in range(n):
            frame, script = single_frame(self.seed(), p_empty=0.05)
            images.append(frame.image)
            for k, label in slot_labels(script, frame.time_s).items():
                labels[k].append(label)
        pixels = pixel_batch(self.adapter, images).to(self.device)
        feats = self.image_features(pixels)  # (n, 9, D)
        rms = feats.pow(2).mean().sqrt()
        if self.cfg.aux_words:
            loss, acc = self.word_loss(feats, labels)
            return loss, rms.item(), acc
        pooled = feats.mean(1)
        loss = feats.new_zeros(())
        acc = {}
        for k, head in self.heads.items():
            target = torch.tensor(labels[k], device=self.device)
            logits = head(pooled)
            loss = loss + F.cross_entropy(logits, target)
            acc[k] = float((logits.argmax(-1) == target).float().mean())
        return loss + (rms / self.emb_rms - 1.0) ** 2, rms.item(), acc

    def word_loss(self, feats: torch.Tensor, labels: dict[str, list[int]]) -> tuple[torch.Tensor, dict[str, float]]:
        """losses.word_loss with slot 0 the colour word on screen (" red"), slot 1 the shape (" circle"),
        slot 2 the digit ("7"), " nothing" on an empty frame, and the <image> row as it was at the start
        as the filler of the other slots."""
        if not hasattr(self, "word_rows"):
            ids = slot_word_ids(self.adapter.tokenizer)
            self.word_rows = {k: self.embed[v].detach().float().clone() for k, v in ids.items()}  # (n_k+1, D)
            self.filler_row = self.embed[self.adapter.image_token_id].detach().float().clone()  # (D,)
        targets = [torch.tensor(labels[k], device=self.device) for k in self.word_rows]
        loss, acc = word_loss(feats, list(self.word_rows.values()), targets, self.filler_row, self.emb_rms)
        return loss, dict(zip(self.word_rows, acc))

    # ---- stage B ---------------------------------------------------------------------------------

    def stage_b(self, resume: Path | None = None) -> None:
        """Stage B from step cfg.b_start; `resume`: a checkpoint of this recipe saved at that step, whose
        other parts load_parts loaded (the optimizer state restarts with a fresh warm-up, the data seeds
        with a new stream)."""
        cfg = self.cfg
        text_model = self.model.model.text_model
        torch.manual_seed(cfg.seed + 1)
        self.lora = add_lora(text_model, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
        self.lora_params = [p for m in self.lora.values() for p in (m.A, m.B)]
        if not hasattr(self, "heads"):
            self.heads = nn.ModuleDict()
        if resume is not None:  # its vision tower, connector and token rows came with load_parts
            load_lora_factors(self.lora, read_trained(resume)[0])  # a target without factors starts at zero
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
        """A fresh batch of `kind` ("frame", "clip", "long" or "presence")."""
        cfg = self.cfg
        if kind == "presence":
            return [presence_example(self.adapter, self.seed(), cfg.presence_frames, n_questions=cfg.presence_questions)
                    for _ in range(cfg.presence_batch)]
        if kind == "long":
            return [clip_example(self.adapter, self.seed(), cfg.long_frames, max_events=cfg.long_events, event_s=(2, 4),
                                 n_questions=cfg.long_questions, kind=kind, weights=self.kind_weights)]  # fmt: skip
        if kind == "clip":
            return [clip_example(self.adapter, self.seed(), cfg.clip_frames, n_questions=cfg.clip_questions, weights=self.kind_weights)
                    for _ in range(cfg.clip_batch)]  # fmt: skip
        return [single_example(self.adapter, self.seed(), n_questions=cfg.frame_questions) for _ in range(cfg.b_batch)]

    def lm_loss(self, examples, pad: int) -> tuple[torch.Tensor, float]:
        """Cross-entropy on the answer tokens; also the fraction of answers whose tokens are all right."""
        batch = {k: v.to(self.device) for k, v in collate(examples, pad).items()}
        feats = self.frame_features([im for e in examples for im in e.images])  # (n_images, 9, D)
        embeds = input_embeds(batch["input_ids"], feats, self.weight_matrix(), self.adapter.image_token_id)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            # no attention mask: the batch is right-padded, so under the causal mask no real token sees a
            # pad, and SDPA's plain causal path is much faster on long clips than an explicit mask
            hidden = self.model.model.text_model(inputs_embeds=embeds).last_hidden_state
        return answer_loss(hidden, batch["labels"], self.weight_matrix())

    def branch_loss(self, ex: Example, background: list, feats: torch.Tensor) -> tuple[torch.Tensor, float]:
        """lm_loss of one branch example (chat=False) over `background` (see branch_hidden), `feats` its
        frames' features (n_frames, 9, D)."""
        ids = torch.tensor([ex.input_ids], device=self.device)  # (1, T)
        embeds = input_embeds(ids, feats, self.weight_matrix(), self.adapter.image_token_id)  # (1, T, D)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            hidden, labels = branch_hidden(self.model.model.text_model, embeds, ex, background)
        return answer_loss(hidden, labels, self.weight_matrix())

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
                embeds = input_embeds(ids, feats, self.weight_matrix(), self.adapter.image_token_id)  # (1, n, D)
                tm(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
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
        with atomic_file(self.results_path) as tmp:
            tmp.write_text(json.dumps(summary, indent=1))



def _cosine(step: int, total: int, floor: float = 0.1) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

