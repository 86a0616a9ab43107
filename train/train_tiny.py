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

This file is the command line (every setting of config.TrainConfig and models.tiny.TinySettings is a
flag, e.g. --a-steps, --long-frames 40,120, --patch-size). The recipe lives in: config.py (the settings),
trainer.py (the model under training and the loop of stages A and B), lora.py (the adapters),
losses.py (input embeddings and the answer loss), splice.py (the spliced forward of stage D) and
data.py (the examples). Deliberately not here: held-out evaluation (bench/quality.py), the world
(streamer.world.scene).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.models.tiny import TinySettings
from train.config import TrainConfig, add_flags, from_flags
from train.trainer import Trainer

log = logging.getLogger("train_tiny")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the built-in `tiny` model on the synthetic world.")
    p.add_argument("--out", type=Path, default=Path("models/weights/tiny.safetensors"))
    p.add_argument("--results", type=Path, default=Path("train/results/train_tiny.json"))
    p.add_argument("--resume", type=Path, default=None, help="continue stage B from this checkpoint (stage A only with --a-on-resume true)")
    add_flags(p, TrainConfig, TinySettings)  # every setting is a flag: --a-steps, --patch-size, ...
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    trainer = Trainer(from_flags(TrainConfig, args), args.out, args.results, from_flags(TinySettings, args))
    if args.resume is not None:
        trainer.load_parts(args.resume)
    if args.resume is None or trainer.cfg.a_on_resume:
        trainer.stage_a()
    trainer.stage_b(args.resume)
    log.info("done in %.1f min", trainer.elapsed() / 60)


if __name__ == "__main__":
    main()
