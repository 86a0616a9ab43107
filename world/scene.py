"""A synthetic video world with ground truth: coloured shapes carrying big digits, on a scene script.

Tests, benchmarks, the demo and the training of the built-in `tiny` model all use it. Everything is
deterministic by seed: the same seed gives the same script, the same pixels and the same answers on
every machine.

- `WorldObject`: a colour, a shape and a digit drawn on it ("red square 7"). Small vocabulary
  (COLOURS, SHAPES, DIGITS) so every answer is one or two words.
- `Event`: an object on screen from `start_s` (inclusive) to `end_s` (exclusive), drifting and
  bouncing off the frame edges. `SceneScript` is a list of non-overlapping events on a plain
  background with a small grey ball that always drifts (a distractor that is never an answer).
- `SceneScript.render(t)` draws the frame at video time t; `frames(fps)` yields `Frame`s on the same
  time grid as `streamer.frames` samples (k / fps); `write_video(path)` encodes an H.264 mp4 with PyAV.
- Question templates with exact answers: `frame_questions` (what is on one frame: colour, shape,
  digit, what is on screen) and `video_questions` (a needle's digit, colour of a digit, what came
  before/after, how many times, when). Answers are lower-case and short ("red", "7", "square",
  "red square", "00:00:41" in the prompts' HH:MM:SS time format).

Deliberately not here: models, prompts and training (see train/ and models/tiny.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from streamer.sources import Frame
from streamer.vocab import format_timestamp

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (240, 210, 20),
    "purple": (150, 50, 190),
}
SHAPES = ("square", "circle", "triangle")
DIGITS = tuple(str(d) for d in range(10))
BALL_RGB = (120, 120, 120)  # the distractor ball: grey, never an answer
NOTHING = "nothing"  # answer to "what is on screen?" when no object is


@dataclass(frozen=True)
class WorldObject:
    """A coloured shape with a digit on it."""

    colour: str  # one of COLOURS
    shape: str  # one of SHAPES
    digit: str  # one of DIGITS

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {sorted(COLOURS)}, got {self.colour!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.digit not in DIGITS:
            raise ValueError(f"digit must be one of {DIGITS}, got {self.digit!r}")

    @property
    def name(self) -> str:
        """"red square": what "what is on screen?" answers."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Placed:
    """Where an object is drawn on one frame (pixels)."""

    obj: WorldObject
    cx: float  # centre x
    cy: float  # centre y
    size: float  # side of the square / diameter of the circle / base and height of the triangle

    def colour_probe(self) -> tuple[int, int]:
        """(x, y) of a pixel inside the shape and off its digit: it shows the object's colour."""
        return int(round(self.cx)), int(round(self.cy + 0.40 * self.size))


@dataclass(frozen=True)
class Event:
    """An object on screen during [start_s, end_s), moving at (vx, vy) px/s and bouncing off the edges."""

    obj: WorldObject
    start_s: float
    end_s: float
    x0: float  # centre at start_s, px
    y0: float
    vx: float = 0.0  # px per second
    vy: float = 0.0
    size: float = 88.0  # px

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0 and self.end_s > self.start_s):
            raise ValueError(f"an event needs 0 <= start_s < end_s, got [{self.start_s}, {self.end_s})")
        if not self.size > 0:
            raise ValueError(f"size must be > 0, got {self.size!r}")

    def visible(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def place(self, t: float, frame_size: int) -> Placed:
        """The object's position at time t (inside the frame: motion reflects off the edges)."""
        lo, hi = self.size / 2 + 2, frame_size - self.size / 2 - 2
        dt = t - self.start_s
        return Placed(self.obj, _bounce(self.x0 + self.vx * dt, lo, hi), _bounce(self.y0 + self.vy * dt, lo, hi), self.size)


@dataclass
class SceneScript:
    """A video: non-overlapping events on a plain background with a drifting grey ball."""

    duration_s: float
    events: list[Event] = field(default_factory=list)
    frame_size: int = 192  # px, square frames
    background: int = 225  # grey level of the background
    seed: int = 0  # drives the ball's path
    start_s: float = 0.0  # the video starts here (a clip cut from a longer video): first sampled time

    def __post_init__(self) -> None:
        if not (self.duration_s > self.start_s >= 0):
            raise ValueError(f"need 0 <= start_s < duration_s, got start_s={self.start_s!r} duration_s={self.duration_s!r}")
        if not (isinstance(self.frame_size, int) and self.frame_size >= 64):
            raise ValueError(f"frame_size must be an integer >= 64 px, got {self.frame_size!r}")
        self.events = sorted(self.events, key=lambda e: e.start_s)
        for a, b in zip(self.events, self.events[1:]):
            if b.start_s < a.end_s:
                raise ValueError(f"events overlap: {a.obj.name} until {a.end_s} s and {b.obj.name} from {b.start_s} s")
        if self.events and (self.events[0].start_s < self.start_s or self.events[-1].end_s > self.duration_s + 1e-9):
            raise ValueError(f"events must lie inside the video [{self.start_s}, {self.duration_s}) s")

    # ---- ground truth ----------------------------------------------------------------------------

    def event_at(self, t: float) -> Event | None:
        """The event on screen at time t, if any."""
        for e in self.events:
            if e.visible(t):
                return e
        return None

    def visible(self, t: float) -> list[Placed]:
        """Objects drawn on the frame at time t, with their positions."""
        e = self.event_at(t)
        return [e.place(t, self.frame_size)] if e else []

    def times(self, fps: float = 1.0) -> list[float]:
        """Sampled times k / fps inside the video: the grid `streamer.frames` samples on."""
        k0 = int(math.ceil(self.start_s * fps - 1e-9))
        n = int(math.floor(self.duration_s * fps - 1e-9)) + 1
        return [k / fps for k in range(k0, n) if self.start_s <= k / fps < self.duration_s]

    def seen_events(self, fps: float = 1.0) -> list[Event]:
        """Events that show on at least one sampled frame."""
        times = self.times(fps)
        return [e for e in self.events if any(e.visible(t) for t in times)]

    def first_seen(self, event: Event, fps: float = 1.0) -> float:
        """Time of the first sampled frame that shows `event`."""
        return next(t for t in self.times(fps) if event.visible(t))

    # ---- pixels ----------------------------------------------------------------------------------

    def render(self, t: float) -> np.ndarray:
        """(frame_size, frame_size, 3) uint8 RGB frame at video time t."""
        s = self.frame_size
        img = np.full((s, s, 3), self.background, dtype=np.uint8)
        rng = random.Random(self.seed)
        phase, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.15)
        bx = s / 2 + 0.38 * s * math.sin(speed * t + phase)
        by = s / 2 + 0.38 * s * math.cos(0.7 * speed * t + 2 * phase)
        cv2.circle(img, (int(bx), int(by)), max(3, s // 20), BALL_RGB, -1, lineType=cv2.LINE_AA)
        for p in self.visible(t):
            draw_object(img, p)
        return img

    def frames(self, fps: float = 1.0) -> Iterator[Frame]:
        """Rendered frames on the sampling grid, without a video file."""
        for t in self.times(fps):
            yield Frame(self.render(t), t)

    def write_video(self, path: str | Path, fps: int = 4) -> Path:
        """Encode the whole script to an H.264 mp4 at `fps` frames per second; returns the path."""
        import av

        path = Path(path)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "18"})
            stream.width = stream.height = self.frame_size
            stream.pix_fmt = "yuv420p"
            for t in self.times(fps):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(self.render(t), format="rgb24")))
            out.mux(stream.encode())
        return path


# ---- building scripts ----------------------------------------------------------------------------


def random_object(rng: random.Random, exclude: Sequence[WorldObject] = ()) -> WorldObject:
    """A random object whose colour, shape and digit differ from those of `exclude` where possible."""
    colours = [c for c in COLOURS if c not in {o.colour for o in exclude}] or list(COLOURS)
    digits = [d for d in DIGITS if d not in {o.digit for o in exclude}] or list(DIGITS)
    return WorldObject(rng.choice(colours), rng.choice(SHAPES), rng.choice(digits))


def random_event(
    rng: random.Random, obj: WorldObject, start_s: float, end_s: float, frame_size: int = 192, still: bool = False
) -> Event:
    """`obj` at a random place, size and drift (none when `still`) during [start_s, end_s)."""
    size = rng.uniform(0.38, 0.55) * frame_size
    lo, hi = size / 2 + 2, frame_size - size / 2 - 2
    speed = 0.0 if still else rng.uniform(0, 0.08) * frame_size
    angle = rng.uniform(0, 2 * math.pi)
    return Event(obj, start_s, end_s, rng.uniform(lo, hi), rng.uniform(lo, hi),
                 speed * math.cos(angle), speed * math.sin(angle), size)  # fmt: skip


def random_script(
    seed: int,
    duration_s: float = 60.0,
    n_events: int = 3,
    event_s: tuple[int, int] = (2, 5),
    distinct: bool = True,
    frame_size: int = 192,
    start_s: int = 0,
) -> SceneScript:
    """A script of `n_events` events at random whole-second times in [start_s, duration_s), each lasting
    event_s seconds (inclusive range), with a gap of at least one second between them. `distinct`: all colours and digits differ
    (so "the red shape" names one event). Deterministic by seed."""
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    lo_d, hi_d = event_s
    if not 1 <= lo_d <= hi_d:
        raise ValueError(f"event_s must be (min, max) whole seconds with 1 <= min <= max, got {event_s}")
    if distinct and n_events > min(len(COLOURS), len(DIGITS)):
        raise ValueError(f"at most {len(COLOURS)} distinct events, got {n_events}")
    rng = random.Random(seed)
    durations = [rng.randint(lo_d, hi_d) for _ in range(n_events)]
    slack = int(duration_s) - int(start_s) - sum(durations) - n_events  # whole seconds left for gaps
    if slack < 0:
        raise ValueError(f"{n_events} events of {event_s} s do not fit in {duration_s} s")
    cuts = sorted(rng.randint(0, slack) for _ in range(n_events))
    events, objects, t = [], [], int(start_s)
    for i, d in enumerate(durations):
        start = t + (cuts[i] - (cuts[i - 1] if i else 0)) + (1 if i else 0)
        obj = random_object(rng, objects if distinct else ())
        objects.append(obj)
        events.append(random_event(rng, obj, float(start), float(start + d), frame_size))
        t = start + d
    return SceneScript(float(duration_s), events, frame_size, background=rng.randint(205, 240), seed=seed,
                       start_s=float(start_s))


def single_frame(seed: int, frame_size: int = 192, p_empty: float = 0.0) -> tuple[Frame, SceneScript]:
    """One frame (time 0 to 59 s) showing one random object (or, with probability p_empty, none)."""
    rng = random.Random(seed)
    t = float(rng.randint(0, 59))
    events = []
    if rng.random() >= p_empty:
        events.append(random_event(rng, random_object(rng), t, t + 1, frame_size, still=True))
    script = SceneScript(t + 1, events, frame_size, background=rng.randint(205, 240), seed=seed)
    return Frame(script.render(t), t), script


# ---- questions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QA:
    """A question with its exact answer."""

    question: str
    answer: str
    kind: str  # template name, e.g. "colour", "needle_digit", "when"


def frame_questions(script: SceneScript, t: float) -> list[QA]:
    """Questions about the one frame at time t."""
    shown = script.visible(t)
    if not shown:
        return [QA("What is on screen?", NOTHING, "what")]
    o = shown[0].obj
    return [
        QA("What colour is the shape?", o.colour, "colour"),
        QA("What shape is it?", o.shape, "shape"),
        QA("What digit is on the shape?", o.digit, "digit"),
        QA("What is on screen?", o.name, "what"),
    ]


def video_questions(script: SceneScript, fps: float = 1.0) -> list[QA]:
    """Questions about the video up to its end, sampled at `fps`; only templates whose answer is unique."""
    seen = script.seen_events(fps)
    qas: list[QA] = []
    last = script.visible(script.times(fps)[-1])
    qas.append(QA("What is on screen now?", last[0].obj.name if last else NOTHING, "now"))
    for i, e in enumerate(seen):
        o = e.obj
        same_name = [x for x in seen if x.obj.name == o.name]
        same_digit = [x for x in seen if x.obj.digit == o.digit]
        same_colour = [x for x in seen if x.obj.colour == o.colour]
        if len(same_name) == 1 and len({x.obj.digit for x in seen if x.obj.name == o.name}) == 1:
            qas.append(QA(f"What digit was on the {o.name}?", o.digit, "needle_digit"))
            if i + 1 < len(seen):
                qas.append(QA(f"What appeared after the {o.name}?", seen[i + 1].obj.name, "after"))
            if i > 0:
                qas.append(QA(f"What appeared before the {o.name}?", seen[i - 1].obj.name, "before"))
        if len(same_digit) == 1:
            qas.append(QA(f"What colour was the shape with the digit {o.digit}?", o.colour, "colour_of_digit"))
            qas.append(QA(f"When did the digit {o.digit} appear?", format_timestamp(script.first_seen(e, fps)), "when"))
        if same_colour[0] is e:
            qas.append(QA(f"How many times did a {o.colour} shape appear?", str(len(same_colour)), "count"))
    if len(seen) == 1:
        qas.append(QA("What digit appeared?", seen[0].obj.digit, "needle_any"))
    return qas


def nearest_colour(rgb: Sequence[int]) -> str:
    """Name of the palette colour closest to an RGB value (for checking rendered or decoded pixels)."""
    rgb = np.asarray(rgb, dtype=float)
    return min(COLOURS, key=lambda c: float(np.sum((rgb - np.asarray(COLOURS[c])) ** 2)))


# ---- drawing -------------------------------------------------------------------------------------


def draw_object(img: np.ndarray, p: Placed) -> None:
    """Draw the shape filled with its colour and its digit (black, white outline) in place."""
    rgb = COLOURS[p.obj.colour]
    cx, cy, s = p.cx, p.cy, p.size
    if p.obj.shape == "square":
        cv2.rectangle(img, (int(cx - s / 2), int(cy - s / 2)), (int(cx + s / 2), int(cy + s / 2)), rgb, -1)
        text_cy, text_h = cy, 0.55 * s
    elif p.obj.shape == "circle":
        cv2.circle(img, (int(cx), int(cy)), int(s / 2), rgb, -1, lineType=cv2.LINE_AA)
        text_cy, text_h = cy, 0.5 * s
    else:  # triangle, apex up
        pts = np.array([[cx, cy - s / 2], [cx - s / 2, cy + s / 2], [cx + s / 2, cy + s / 2]], dtype=np.int32)
        cv2.fillPoly(img, [pts], rgb, lineType=cv2.LINE_AA)
        text_cy, text_h = cy + 0.14 * s, 0.36 * s
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = text_h / 22.0  # Hershey simplex digits are about 22 px tall at scale 1
    thick = max(2, int(round(text_h / 9)))
    (w, h), _ = cv2.getTextSize(p.obj.digit, font, scale, thick)
    org = (int(cx - w / 2), int(text_cy + h / 2))
    cv2.putText(img, p.obj.digit, org, font, scale, (255, 255, 255), thick + 3, cv2.LINE_AA)
    cv2.putText(img, p.obj.digit, org, font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def _bounce(x: float, lo: float, hi: float) -> float:
    """Reflect x into [lo, hi] (motion bouncing off walls)."""
    if hi <= lo:
        return (lo + hi) / 2
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)
