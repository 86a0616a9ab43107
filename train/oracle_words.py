"""Would frame tokens that read like words help the LM bind questions to objects? An oracle check.

    .venv/bin/python -m train.oracle_words --features words          # true words in place of frame tokens
    .venv/bin/python -m train.oracle_words --features vision --weights /tmp/tiny_w_a.safetensors

Held-out five-object clips (`train.data.clip_example`, seeds from HELD_OUT_SEED + 777) go through the
text model of a `tiny` checkpoint once each, teacher-forced; an answer counts when every one of its
tokens is the argmax. `--features words` puts the embeddings of the colour, shape and digit on screen
in image slots 0-2 (" nothing" in slot 0 when empty) and the <image> row in the rest, close to what
stage W's `word_loss` trains the connector to do (which puts " nothing" in all three); `repeated` fills all nine slots with the three words; `vision` uses the
checkpoint's own vision tower and connector. `--no-lora` drops the checkpoint's LoRA factors.
docs/training.md ("Stage W") has the numbers. Deliberately not here: greedy decoding through a session
(bench/quality.py does that).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.models.tiny import WEIGHTS_FILE, TinyAdapter, build_tiny, load_language_model, load_trained, read_trained
from train.data import HELD_OUT_SEED, Example, clip_example, pixel_batch, slot_labels, slot_word_ids
from train.losses import input_embeds


def word_features(ex: Example, weight: torch.Tensor, ids: dict[str, list[int]], filler: torch.Tensor, repeated: bool) -> torch.Tensor:
    """(n_frames, 9, D): the words of what each frame shows (`ids`: train.data.slot_word_ids) in slots
    0-2, or " nothing" in slot 0 of an empty frame; `filler` in the rest (`repeated`: the words again)."""
    out = []
    for frame in ex.frames:
        labels = slot_labels(ex.script, frame.time_s)
        words = [weight[ids[k][i]] for k, i in labels.items()]
        if not ex.script.visible(frame.time_s):
            words = words[:1]  # " nothing" once
        out.append(torch.stack((words * 9)[:9] if repeated else words + [filler] * (9 - len(words))))
    return torch.stack(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", choices=["words", "repeated", "vision"], default="words")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_FILE, help="tiny checkpoint (default: the committed one)")
    ap.add_argument("--no-lora", action="store_true")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer, image_processor = build_tiny(language_model=load_language_model())
    state, _, n_old = read_trained(args.weights)
    if args.no_lora:
        state = {k: v for k, v in state.items() if not k.startswith("lora.")}
    load_trained(model, state, n_old)
    adapter = TinyAdapter("tiny-oracle", model, tokenizer, image_processor)
    weight = model.model.text_model.embed_tokens.weight.detach()  # (V, D)
    word_ids = slot_word_ids(tokenizer)
    right = collections.Counter()
    asked = collections.Counter()
    for i in range(args.clips):
        ex = clip_example(adapter, HELD_OUT_SEED + 777 + i, (args.frames, args.frames), max_events=5, event_s=(2, 4),
                          n_questions=6, kind="long")  # fmt: skip
        ids = torch.tensor([ex.input_ids])  # (1, T)
        with torch.no_grad():
            if args.features == "vision":
                pixels = pixel_batch(adapter, ex.images)  # (n, 3, S, S)
                side = pixels.shape[-1] // model.config.vision_config.patch_size
                mask = torch.ones((pixels.shape[0], side, side), dtype=torch.bool)
                feats = model.model.connector(model.model.vision_model(pixel_values=pixels, patch_attention_mask=mask).last_hidden_state)
            else:
                feats = word_features(ex, weight, word_ids, weight[adapter.image_token_id], args.features == "repeated")
            hidden = model.model.text_model(inputs_embeds=input_embeds(ids, feats, weight, adapter.image_token_id)).last_hidden_state
            logits = hidden[0] @ weight.t()  # (T, V)
        for qa, (a, b) in zip(ex.qas, ex.targets):
            asked[qa.kind] += 1
            right[qa.kind] += bool((logits[a - 1 : b - 1].argmax(-1) == ids[0, a:b]).all())
    print(f"{args.features}{' without LoRA' if args.no_lora else ''}, {args.clips} clips of {args.frames} frames: "
          f"{sum(right.values())}/{sum(asked.values())} right; " + ", ".join(f"{k} {right[k]}/{n}" for k, n in asked.items()))


if __name__ == "__main__":
    main()
