"""Training and evaluation examples for the `tiny` model, drawn from `streamer.world` by seed.

An example is the exact token sequence the SmolVLM adapter feeds at inference (the prompt of one chunk
of frames, then the question prompt), followed by the answer tokens and <end_of_utterance>; the loss is
on the answer tokens only. Prompts are built with the adapter itself, so training and inference
cannot drift apart.

Seeds: training draws world seeds below HELD_OUT_SEED; evaluation uses seeds from HELD_OUT_SEED on.

Deliberately not here: the model and the optimisation (train_tiny.py), scoring (eval_tiny.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from models.prompt import Conversation
from streamer.frames import Chunk, Frame
from streamer.world import frame_questions, random_script, single_frame, video_questions

HELD_OUT_SEED = 10_000_000  # world seeds >= this are never trained on

# how often each video question template is drawn for multi-frame clips (others: weight 1)
CLIP_KIND_WEIGHTS = {"needle_digit": 4.0, "needle_any": 2.0, "colour_of_digit": 2.0, "when": 1.5, "now": 0.5}


@dataclass
class Example:
    """One training sequence."""

    input_ids: list[int]  # prompt + answer + <end_of_utterance>
    n_prompt: int  # tokens before the answer
    images: list[np.ndarray]  # frames in order, (H, W, 3) uint8 RGB
    question: str
    answer: str
    kind: str


def encode(adapter, frames: list[Frame], question: str, answer: str, kind: str) -> Example:
    """The adapter's prompt for one chunk of `frames` and `question`, then " answer<end_of_utterance>"."""
    chunk = adapter.chunk_prompt(Chunk(tuple(frames)), Conversation())
    q = adapter.question_prompt(question, chunk.after)
    prompt = chunk.input_ids[0].tolist() + q.input_ids[0].tolist()
    answer_ids = adapter.tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    ids = prompt + answer_ids + [adapter.eos_token_ids[0]]  # <end_of_utterance> closes a SmolVLM answer
    return Example(ids, len(prompt), [f.image for f in frames], question, answer, kind)


def single_example(adapter, seed: int, p_empty: float = 0.04) -> Example:
    """One frame and one of its questions (colour, shape, digit, what is on screen)."""
    rng = random.Random(seed * 7 + 1)
    frame, script = single_frame(seed, p_empty=p_empty)
    qa = rng.choice(frame_questions(script, frame.time_s))
    return encode(adapter, [frame], qa.question, qa.answer, qa.kind)


def clip_example(
    adapter, seed: int, n_frames: tuple[int, int] = (4, 10), max_events: int = 3, event_s: tuple[int, int] = (1, 2)
) -> Example:
    """A clip at 1 fps (1 to `max_events` events of `event_s` seconds, cut from anywhere in a 5-minute
    video) and one video question. Short dense clips teach the templates; long sparse ones (e.g. 40-120
    frames, one or two events) teach finding a needle among many empty frames."""
    rng = random.Random(seed * 7 + 2)
    n = rng.randint(*n_frames)
    start = rng.randint(0, 300 - n)
    # events plus 1 s gaps must fit in n s
    n_events = rng.randint(1, max(1, min(max_events, n // (event_s[1] + 1))))
    script = random_script(seed, duration_s=start + n, n_events=n_events, event_s=event_s, start_s=start)
    frames = list(script.frames(1.0))
    qas = video_questions(script, 1.0)
    qa = rng.choices(qas, weights=[CLIP_KIND_WEIGHTS.get(q.kind, 1.0) for q in qas])[0]
    return encode(adapter, frames, qa.question, qa.answer, qa.kind)


def pixel_batch(adapter, images: list[np.ndarray]) -> torch.Tensor:
    """(n, 3, S, S) float pixels of `images` through the adapter's image processor."""
    return adapter._pixel_inputs(images)["pixel_values"][0]  # (1, n, 3, S, S) -> (n, 3, S, S)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask (B, T) and labels (B, T) (-100 off the answers)."""
    t = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), t), dtype=torch.long)
    labels = torch.full((len(examples), t), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, e.n_prompt:n] = ids[i, e.n_prompt:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
