"""Training and evaluation examples for the `tiny` model, drawn from `streamer.world` by seed.

An example is the exact token sequence the SmolVLM adapter feeds at inference: the prompt of one chunk
of frames, then for each question in turn the question prompt, the answer tokens with
<end_of_utterance>, and the end of the assistant turn; the loss is on the answer tokens only. Prompts
are built with the adapter itself, so training and inference cannot drift apart. A spliced example
(stage D) puts objects into a given background video and asks each question on its own right after
the frames, for a trainer that reuses the background's keys and values.

Seeds: training draws world seeds below HELD_OUT_SEED; evaluation uses seeds from HELD_OUT_SEED on.

Deliberately not here: the model and the optimisation (train_tiny.py), scoring (bench/quality.py).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from streamer.shared_types import Conversation
from streamer.frames import Chunk
from streamer.video.frame import Frame
from streamer.world.presence import presence_qa
from streamer.world.scene import COLOURS, DIGITS, QA, SHAPES, SceneScript, frame_questions, random_script, single_frame, video_questions

HELD_OUT_SEED = 10_000_000  # world seeds >= this are never trained on

# how often each video question template is drawn for multi-frame clips (others: weight 1)
CLIP_KIND_WEIGHTS = {"needle_digit": 4.0, "needle_any": 2.0, "colour_of_digit": 2.0, "when": 1.5, "now": 0.5}

# what a frame shows, one attribute per image slot (stage W puts slot k's word in image token k), and the
# words as the questions and answers spell them; an empty frame is " nothing" in every slot
SLOT_WORDS = {"colour": [" " + c for c in COLOURS], "shape": [" " + s for s in SHAPES], "digit": list(DIGITS)}
NOTHING = " nothing"


@dataclass
class Example:
    """One training sequence: a chunk of frames, then one or more question/answer turns (a chat)."""

    input_ids: list[int]  # prompt, answers with <end_of_utterance>, the turn ends between them
    targets: list[tuple[int, int]]  # [start, end) of each answer's tokens (its <end_of_utterance> included)
    frames: list[Frame]  # in order
    qas: list[QA]  # the questions, in the order they are asked
    kind: str  # batch kind: "frame", "clip", "long", "spliced" or "presence"
    times: list[float]  # per token: video time (s) of the frame it belongs to; NaN for text outside frames
    script: SceneScript  # the video the frames come from (its events are the ground truth)
    starts: list[int]  # where each question's prompt begins; input_ids[:starts[0]] are the frames
    chat: bool = True  # False: each question follows the frames directly (branches, see encode)

    @property
    def images(self) -> list[np.ndarray]:
        """The frames' pixels, (H, W, 3) uint8 RGB."""
        return [f.image for f in self.frames]

    def near_events(self, margin_s: float = 1.0) -> torch.Tensor:
        """(T,) bool: tokens outside frames (prompt text, questions, answers) and the tokens of frames
        within `margin_s` of an event or last in the clip; the rest are frames of the empty background."""
        t = torch.tensor(self.times, dtype=torch.float64)
        keep = t.isnan() | (t >= self.frames[-1].time_s)
        for e in self.script.events:
            keep |= (t >= e.start_s - margin_s) & (t < e.end_s + margin_s)
        return keep


def encode(adapter, script: SceneScript, frames: list[Frame], qas: list[QA], kind: str, chat: bool = True) -> Example:
    """What the session feeds for one chunk of `frames` and then each question in turn: the question
    prompt, " answer<end_of_utterance>" (the loss targets) and, in a chat, before the next question the
    rest of the adapter's answer_end() (its first token is that same <end_of_utterance>). With
    chat=False every question is asked on its own right after the frames: the example then holds
    branches that only a trainer feeding each one over the frames' cache can use (Example.chat)."""
    if not qas:
        raise ValueError("an example needs at least one question")
    eou = adapter.eos_token_ids[0]  # <end_of_utterance> closes a SmolVLM answer
    chunk = adapter.chunk_prompt(Chunk(tuple(frames)), Conversation())
    ids, conv, targets, starts = chunk.input_ids[0].tolist(), chunk.after, [], []
    times = chunk.times.tolist()
    for i, qa in enumerate(qas):
        starts.append(len(ids))
        q = adapter.question_prompt(qa.question, conv if chat else chunk.after)
        ids += q.input_ids[0].tolist()
        answer_ids = adapter.tokenizer(" " + qa.answer, add_special_tokens=False)["input_ids"]
        targets.append((len(ids), len(ids) + len(answer_ids) + 1))
        ids += answer_ids + [eou]
        if chat and i + 1 < len(qas):
            end = adapter.answer_end(q.after)
            end_ids = end.input_ids[0].tolist()
            if end_ids[0] != eou:
                raise ValueError(f"answer_end() should start with <end_of_utterance> ({eou}), got {end_ids[:3]}")
            ids += end_ids[1:]
            conv = end.after
    times += [math.nan] * (len(ids) - len(times))  # questions and answers
    return Example(ids, targets, list(frames), list(qas), kind, times, script, starts, chat)


def single_example(adapter, seed: int, p_empty: float = 0.04, n_questions: int = 1) -> Example:
    """One frame and up to `n_questions` different questions about it (colour, shape, digit, what is
    on screen), asked one after the other."""
    rng = random.Random(seed * 7 + 1)
    frame, script = single_frame(seed, p_empty=p_empty)
    qas = frame_questions(script, frame.time_s)
    return encode(adapter, script, [frame], rng.sample(qas, min(n_questions, len(qas))), "frame")


def clip_example(
    adapter,
    seed: int,
    n_frames: tuple[int, int] = (4, 10),
    max_events: int = 3,
    event_s: tuple[int, int] = (1, 2),
    n_questions: int = 1,
    kind: str = "clip",
    weights: dict[str, float] = CLIP_KIND_WEIGHTS,
) -> Example:
    """A clip at 1 fps (1 to `max_events` events of `event_s` seconds, cut from anywhere in a 5-minute
    video) and up to `n_questions` different video questions, asked one after the other. Short dense
    clips teach the templates; long sparse ones (e.g. 60-200 frames, up to five objects, several
    questions) teach finding the frame a question is about among many others. `weights`: see pick_questions."""
    rng = random.Random(seed * 7 + 2)
    n = rng.randint(*n_frames)
    start = rng.randint(0, 300 - n)
    # events plus 1 s gaps must fit in n s
    n_events = rng.randint(1, max(1, min(max_events, n // (event_s[1] + 1))))
    script = random_script(seed, duration_s=start + n, n_events=n_events, event_s=event_s, start_s=start)
    return encode(adapter, script, list(script.frames(1.0)), pick_questions(rng, script, n_questions, weights), kind)


def presence_example(adapter, seed: int, n_frames: tuple[int, int] = (4, 12), max_events: int = 2,
                     n_questions: int = 3) -> Example:
    """A clip at 1 fps (0 to `max_events` events of 1-5 s, cut from anywhere in a 5-minute video) and up to
    `n_questions` different presence questions about its last 4 s ("Is there a red circle on screen?" ->
    yes / no, `world.presence`), asked one after the other."""
    rng = random.Random(seed * 7 + 4)
    n = rng.randint(*n_frames)
    start = rng.randint(0, 300 - n)
    n_events = rng.randint(0, max(0, min(max_events, n // 2)))
    script = random_script(seed, duration_s=start + n, n_events=n_events, event_s=(1, 5) if n >= 6 * n_events else (1, 1),
                           start_s=start)  # fmt: skip
    frames = list(script.frames(1.0))
    qas: dict[str, QA] = {}
    for _ in range(4 * n_questions):
        qa = presence_qa(rng, script, frames[-1].time_s)
        qas.setdefault(qa.question, qa)
        if len(qas) == n_questions:
            break
    return encode(adapter, script, frames, list(qas.values()), "presence")


def spliced_example(
    adapter, seed: int, background: SceneScript, max_events: int = 3, event_s: tuple[int, int] = (2, 4), n_questions: int = 3
) -> Example:
    """1 to `max_events` events at random times in the `background` video (no events of its own: same
    length, background grey and ball), and up to `n_questions` video questions about them, each on its
    own right after the frames (chat=False). Frames away from the events are the background's, token for
    token, so a trainer can take their keys and values from one forward pass over the background and
    splice in only the frames near events (Example.near_events)."""
    if background.events:
        raise ValueError("the background video must have no events")
    rng = random.Random(seed * 7 + 3)
    script = random_script(seed, duration_s=background.duration_s, n_events=rng.randint(1, max_events),
                           event_s=event_s, start_s=int(background.start_s))  # fmt: skip
    script = dataclasses.replace(script, background=background.background, seed=background.seed)
    qas = pick_questions(rng, script, n_questions)
    return encode(adapter, script, list(script.frames(1.0)), qas, "spliced", chat=False)


def pick_questions(rng: random.Random, script: SceneScript, n: int, weights: dict[str, float] = CLIP_KIND_WEIGHTS) -> list[QA]:
    """Up to n different video questions about `script`, drawn without replacement by `weights` per
    template (1 for templates it does not name)."""
    qas = video_questions(script, 1.0)
    weights = [weights.get(q.kind, 1.0) for q in qas]
    chosen = []
    for _ in range(min(n, sum(w > 0 for w in weights))):  # weight 0: never drawn
        i = rng.choices(range(len(qas)), weights=weights)[0]
        chosen.append(qas[i])
        weights[i] = 0.0
    return chosen


def slot_labels(script: SceneScript, t: float) -> dict[str, int]:
    """Per attribute of SLOT_WORDS, the index of what the frame at `t` shows; len(SLOT_WORDS[k]) (nothing,
    also the auxiliary heads' "none" class) on an empty frame."""
    shown = script.visible(t)
    obj = shown[0].obj if shown else None
    return {k: [w.strip() for w in words].index(getattr(obj, k)) if obj else len(words) for k, words in SLOT_WORDS.items()}


def slot_word_ids(tokenizer) -> dict[str, list[int]]:
    """Token ids of SLOT_WORDS[k] followed by NOTHING, per attribute (each word is one token)."""
    return {k: [tokenizer(w, add_special_tokens=False)["input_ids"][-1] for w in words + [NOTHING]] for k, words in SLOT_WORDS.items()}


def pixel_batch(adapter, images: list[np.ndarray]) -> torch.Tensor:
    """(n, 3, S, S) float pixels of `images` through the adapter's image processor."""
    return adapter._pixel_inputs(images)["pixel_values"][0]  # (1, n, 3, S, S) -> (n, 3, S, S)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids and labels (B, T), labels -100 off the answers. No attention mask is
    needed under a causal mask: real tokens never see the pads that follow them."""
    if not all(e.chat for e in examples):
        raise ValueError("collate() feeds each example as one sequence: branch examples (chat=False) need their frames' cache")
    t = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), t), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        for a, b in e.targets:
            labels[i, a:b] = ids[i, a:b]
    return {"input_ids": ids, "labels": labels}
