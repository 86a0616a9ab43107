"""Presence questions of the synthetic world: "Is there a red circle on screen?", "Is the digit 7 on screen?".

What standing questions ("tell me when ...", `StreamSession.watch`) ask after every chunk. "On screen" means
on a frame of the last `WINDOW_S` seconds (one chunk of the default sampler: 4 frames at 1 fps), so an
object that comes and goes between two checks is still seen by the next one. Answers are "yes" or "no".

- `Lookout(colour, shape, digit)`: what a question looks for (any attribute may be None: not asked);
  `question` is its text, `matches(obj)` the ground truth for one object.
- `on_screen(script, lookout, t, fps)`: True if a sampled frame in (t - WINDOW_S, t] shows a match.
- `presence_qa(rng, script, t, fps)`: one presence question about the window ending at t, "yes" about half
  the time; the "no" questions are mostly near misses (an object on screen with one attribute changed, or
  one that was on screen before the window).

Deliberately not here: rendering and the other question templates (`scene.py`), the alerts themselves
(`streamer/watch.py`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from streamer.world.scene import COLOURS, DIGITS, QA, SHAPES, SceneScript, WorldObject

WINDOW_S = 4.0  # a presence question is about the frames of the last 4 s
YES, NO = "yes", "no"


@dataclass(frozen=True)
class Lookout:
    """An object a presence question looks for: a colour and a shape ("a red circle") or a digit."""

    colour: str | None = None
    shape: str | None = None
    digit: str | None = None

    def __post_init__(self) -> None:
        if (self.digit is None) == (self.colour is None or self.shape is None):
            raise ValueError(f"a lookout is a colour and a shape, or a digit, got {self}")

    @property
    def question(self) -> str:
        if self.digit is not None:
            return f"Is the digit {self.digit} on screen?"
        return f"Is there a {self.colour} {self.shape} on screen?"

    def matches(self, obj: WorldObject) -> bool:
        if self.digit is not None:
            return obj.digit == self.digit
        return (obj.colour, obj.shape) == (self.colour, self.shape)

    @classmethod
    def of(cls, obj: WorldObject, by_digit: bool) -> Lookout:
        return cls(digit=obj.digit) if by_digit else cls(obj.colour, obj.shape)


def window_times(script: SceneScript, t: float, fps: float = 1.0, window_s: float = WINDOW_S) -> list[float]:
    """Sampled times in (t - window_s, t]."""
    return [s for s in script.times(fps) if t - window_s < s <= t + 1e-9]


def on_screen(script: SceneScript, lookout: Lookout, t: float, fps: float = 1.0, window_s: float = WINDOW_S) -> bool:
    """Ground truth: a sampled frame of the last `window_s` seconds before `t` (included) shows a match."""
    return any(lookout.matches(p.obj) for s in window_times(script, t, fps, window_s) for p in script.visible(s))


def near_miss(rng: random.Random, obj: WorldObject, by_digit: bool) -> Lookout:
    """A lookout that `obj` does not match but that shares something with it."""
    if by_digit:
        return Lookout(digit=rng.choice([d for d in DIGITS if d != obj.digit]))
    if rng.random() < 0.5:
        return Lookout(rng.choice([c for c in COLOURS if c != obj.colour]), obj.shape)
    return Lookout(obj.colour, rng.choice([s for s in SHAPES if s != obj.shape]))


def presence_qa(rng: random.Random, script: SceneScript, t: float, fps: float = 1.0) -> QA:
    """One presence question about the window ending at `t`, "yes" about half the time in clips with events. A "no" is
    a near miss of an object in the window, of one seen earlier in the video, or a random object."""
    by_digit = rng.random() < 0.5
    shown = [p.obj for s in window_times(script, t, fps) for p in script.visible(s)]
    earlier = [e.obj for e in script.seen_events(fps) if e.obj not in shown and e.start_s <= t]
    if shown and rng.random() < 0.9:  # (about half the windows show nothing)
        lookout = Lookout.of(rng.choice(shown), by_digit)
    else:
        pool = shown + earlier
        if pool and rng.random() < 0.8:
            base = rng.choice(pool)
            lookout = Lookout.of(base, by_digit) if base in earlier and rng.random() < 0.5 else near_miss(rng, base, by_digit)
        else:
            lookout = Lookout.of(WorldObject(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(DIGITS)), by_digit)
    return QA(lookout.question, YES if on_screen(script, lookout, t, fps) else NO, "presence")
