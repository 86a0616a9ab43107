"""The text retrieval task of bench_retrieval.py: one code in a long timestamped system log.

Each prompt is a log of `n_lines` timestamped events ("[00:03:12] pump 41 pressure ok") with one fact
line at a random depth ("[00:17:40] The code for vault 6 is 7150."), then the question "What is the
code for vault 6?" and the start of the answer ("The code for vault 6 is ", with the space), so the next tokens are
the code's digits. Right = the greedy continuation starts with the 4 digits. Pure Python (no torch, no project
imports): kvpress's own venv imports it too, so both sides tokenize exactly the same text.
"""

from __future__ import annotations

import random

OBJECTS = ["door", "locker", "gate", "vault", "server", "printer", "truck", "cabin", "drone", "boat"]
EVENTS = ["sensor {} reading normal", "camera {} online", "fan {} speed steady", "pump {} pressure ok",
          "light {} switched off", "badge {} scanned at lobby", "valve {} closed", "elevator {} at floor 2"]


def hms(t: int) -> str:
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


def _log(r: random.Random, n_lines: int, facts: dict[int, str]) -> list[str]:
    """`n_lines` timestamped log lines: the routine events of EVENTS, and the text of `facts` at their line numbers."""
    lines, t = [], 0
    for i in range(n_lines):
        t += r.randint(3, 20)
        lines.append(f"[{hms(t)}] " + (facts[i] if i in facts else r.choice(EVENTS).format(r.randint(1, 99))))
    return lines


def make_prompt(seed: int, n_lines: int) -> dict:
    """{context, question, answer, depth}: context = chat opening + log; question = the rest up to the code."""
    r = random.Random(seed)
    obj, num, code = r.choice(OBJECTS), r.randint(1, 9), r.randint(1000, 9999)
    at = r.randint(2, n_lines - 3)
    lines = _log(r, n_lines, {at: f"The code for {obj} {num} is {code}."})
    context = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
               "<|im_start|>user\nHere is a system log.\n\n" + "\n".join(lines) + "\n\n")
    question = (f"Question: What is the code for {obj} {num}? Answer with the number only.<|im_end|>\n"
                f"<|im_start|>assistant\nThe code for {obj} {num} is ")  # the space: SmolLM2 writes " 7150" as
    # " ", "7", "1", "5", "0", so the first answer token is the code's first digit
    return {"seed": seed, "context": context, "question": question, "answer": str(code), "depth": at / n_lines}


def is_right(generated: str, answer: str) -> bool:
    """The greedy continuation starts with the code (spaces and punctuation around it allowed)."""
    digits = "".join(ch for ch in generated.strip()[: len(answer) + 2] if ch.isdigit())
    return digits[: len(answer)] == answer


SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
PROXY = "<|im_end|>\n<|im_start|>assistant\n"  # ChatML's assistant opening: the proxy queries of the `proxy` scorer


def make_multikey(seed: int, n_lines: int, keys: int = 4) -> dict:
    """The log of `make_prompt` with `keys` code lines of the same form ("The code for gate 3 is 4821.") for
    different objects; the question asks for one of them."""
    r = random.Random(10_000 + seed)
    objs = r.sample([(o, n) for o in OBJECTS for n in range(1, 10)], keys)
    codes = r.sample(range(1000, 10000), keys)
    at = dict(zip(r.sample(range(2, n_lines - 3), keys), range(keys)))
    asked = r.randrange(keys)
    lines = _log(r, n_lines, {i: "The code for {} {} is {}.".format(*objs[k], codes[k]) for i, k in at.items()})
    (obj, num), code = objs[asked], codes[asked]
    depth = [i for i, k in at.items() if k == asked][0] / n_lines
    context = SYSTEM + "<|im_start|>user\nHere is a system log.\n\n" + "\n".join(lines) + "\n\n"
    question = (f"Question: What is the code for {obj} {num}? Answer with the number only.<|im_end|>\n"
                f"<|im_start|>assistant\nThe code for {obj} {num} is ")
    return {"seed": seed, "context": context, "question": question, "answer": str(code), "depth": depth}


COLOURS = ["red", "blue", "green", "white", "black", "yellow", "grey", "orange"]
VEHICLES = ["truck", "van", "bus", "car", "tractor", "motorbike"]
SCENES = ["A man crosses the street.", "Two people talk near the door.", "The light turns green.",
          "A dog runs across the yard.", "Rain starts to fall.", "A woman waits at the stop.",
          "A bird lands on the fence.", "The camera pans to the left.", "Leaves blow across the road.",
          "A child rides a bicycle.", "Someone opens a window.", "A cyclist passes by."]


def make_captions(seed: int, n_lines: int) -> dict:
    """A timestamped caption stream, one caption every few seconds (the text of a video), with one vehicle
    caption carrying a plate number at a random time; the question comes at a later time (`asked_at`, seconds),
    after more captions, and asks for the plate. The context holds the captions up to that time only."""
    r = random.Random(20_000 + seed)
    colour, vehicle, plate = r.choice(COLOURS), r.choice(VEHICLES), r.randint(1000, 9999)
    at = r.randint(2, n_lines - 3)
    lines, t = [], 0
    for i in range(n_lines):
        t += r.randint(2, 8)
        if i == at:
            lines.append(f"[{hms(t)}] A {colour} {vehicle} with plate {plate} parks at the gate.")
        else:
            lines.append(f"[{hms(t)}] " + r.choice(SCENES))
    context = SYSTEM + "<|im_start|>user\nHere are the captions of a live video so far.\n\n" + "\n".join(lines) + "\n\n"
    question = (f"Question: What was the plate of the {colour} {vehicle}? Answer with the number only.<|im_end|>\n"
                f"<|im_start|>assistant\nThe plate of the {colour} {vehicle} was ")
    return {"seed": seed, "context": context, "question": question, "answer": str(plate), "depth": at / n_lines,
            "asked_at": t}


TASKS = {"needle": make_prompt, "multikey": make_multikey, "captions": make_captions}
