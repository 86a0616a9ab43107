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
- `Realism` (optional, off by default): camera and scene imperfections so that no two frames are
  pixel-equal (sensor noise, brightness flicker, a slowly panning textured background, grey distractors
  that are never answers); `Realism.noisy()` is the preset. They change pixels only, never the ground
  truth; the default world (no realism) renders exactly as before they existed.
- Question templates with exact answers: `frame_questions` (what is on one frame: colour, shape,
  digit, what is on screen) and `video_questions` (a needle's digit, colour of a digit, what came
  before/after, how many times, when). Answers are lower-case and short ("red", "7", "square",
  "red square", "00:00:41" in the prompts' HH:MM:SS time format).

Deliberately not here: models, prompts and training (see train/ and models/tiny.py).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from streamer.video.frame import Frame
from streamer.shared_types import format_timestamp

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


@dataclass(frozen=True)
class Realism:
    """Imperfections that make a scene "not perfectly static", so no check of pixel equality can tell
    frames with nothing new apart from frames with something new. Every setting at 0 is the clean world.
    All of it is deterministic from the script's seed and the frame's time; none of it changes the
    ground truth (events, `visible`, questions). Objects are drawn on top of the background and the
    distractors, then noise and flicker apply to the whole frame like a camera's."""

    noise_std: float = 0.0  # Gaussian sensor noise per pixel and channel, std in 0-255 units, new every frame
    flicker: float = 0.0  # brightness: each frame is multiplied by 1 + flicker * u(t), u a smooth term in [-1, 1]
    texture: float = 0.0  # textured background: soft blobs up to this many grey levels darker (0: plain grey)
    pan_px_s: float = 0.0  # the textured background pans by this many px per second (needs texture > 0)
    n_distractors: int = 0  # extra grey crosses and bars drifting behind the objects (never an answer)

    def __post_init__(self) -> None:
        for name, hi in (("noise_std", 64.0), ("flicker", 0.5), ("texture", 100.0), ("pan_px_s", 1000.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
                raise ValueError(f"Realism.{name} must be a number in [0, {hi:g}], got {v!r}")
        if self.pan_px_s > 0 and self.texture == 0:
            raise ValueError("Realism.pan_px_s > 0 needs texture > 0: a plain background shows no panning")
        n = self.n_distractors
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 12:
            raise ValueError(f"Realism.n_distractors must be an integer in [0, 12], got {n!r}")

    @classmethod
    def noisy(cls) -> Realism:
        """The preset for benchmarks: visible but mild noise, 5 % flicker, a slow pan and 3 distractors."""
        return cls(noise_std=6.0, flicker=0.05, texture=20.0, pan_px_s=2.0, n_distractors=3)


@dataclass
class SceneScript:
    """A video: non-overlapping events on a plain background with a drifting grey ball (and, with
    `realism`, a noisy camera, a panning textured background and more distractors)."""

    duration_s: float
    events: list[Event] = field(default_factory=list)
    frame_size: int = 192  # px, square frames
    background: int = 225  # grey level of the background
    seed: int = 0  # drives the ball's path
    start_s: float = 0.0  # the video starts here (a clip cut from a longer video): first sampled time
    realism: Realism | None = None  # camera and scene imperfections; None: the clean, static world

    def __post_init__(self) -> None:
        if self.realism is not None and not isinstance(self.realism, Realism):
            raise ValueError(f"realism must be a Realism or None, got {type(self.realism).__name__}")
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

    def ball_at(self, t: float) -> tuple[int, int, int]:
        """(x, y, radius) in px of the grey ball drawn at time t."""
        s = self.frame_size
        rng = random.Random(self.seed)
        phase, speed = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.15)
        bx = s / 2 + 0.38 * s * math.sin(speed * t + phase)
        by = s / 2 + 0.38 * s * math.cos(0.7 * speed * t + 2 * phase)
        return int(bx), int(by), max(3, s // 20)

    def render(self, t: float) -> np.ndarray:
        """(frame_size, frame_size, 3) uint8 RGB frame at video time t."""
        s, r = self.frame_size, self.realism
        if r is not None and r.texture > 0:
            img = _textured_background(self.seed, s, self.background, r.texture, r.pan_px_s, t)
        else:
            img = np.full((s, s, 3), self.background, dtype=np.uint8)
        bx, by, radius = self.ball_at(t)
        cv2.circle(img, (bx, by), radius, BALL_RGB, -1, lineType=cv2.LINE_AA)
        if r is not None and r.n_distractors:
            _draw_distractors(img, self.seed, r.n_distractors, t)
        for p in self.visible(t):
            draw_object(img, p)
        if r is not None and (r.flicker > 0 or r.noise_std > 0):
            img = _camera(img, self.seed, t, r.flicker, r.noise_std)
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
    realism: Realism | None = None,
) -> SceneScript:
    """A script of `n_events` events at random whole-second times in [start_s, duration_s), each lasting
    event_s seconds (inclusive range), with a gap of at least one second between them. `distinct`: all colours and digits differ
    (so "the red shape" names one event). `realism` changes the pixels only. Deterministic by seed."""
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
                       start_s=float(start_s), realism=realism)


def single_frame(
    seed: int, frame_size: int = 192, p_empty: float = 0.0, realism: Realism | None = None
) -> tuple[Frame, SceneScript]:
    """One frame (time 0 to 59 s) showing one random object (or, with probability p_empty, none),
    through `realism`'s camera when given."""
    rng = random.Random(seed)
    t = float(rng.randint(0, 59))
    events = []
    if rng.random() >= p_empty:
        events.append(random_event(rng, random_object(rng), t, t + 1, frame_size, still=True))
    script = SceneScript(t + 1, events, frame_size, background=rng.randint(205, 240), seed=seed, realism=realism)
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


# ---- realism (see `Realism`) ---------------------------------------------------------------------


def _rng(seed: int, *key: int) -> np.random.Generator:
    """A generator for one purpose (`key`) of one script (`seed`), the same on every machine."""
    return np.random.default_rng([seed % 2**64, *(k % 2**64 for k in key)])


_TEXTURE, _DISTRACTORS, _FLICKER, _NOISE = 1, 2, 3, 4  # purposes for `_rng`


@functools.lru_cache(maxsize=8)
def _texture_tile(seed: int, period: int) -> tuple[np.ndarray, float]:
    """((period, period) float32 pattern in [-1, 1], direction of the pan in radians) for a script.
    The pattern is smooth blobs (a sum of cosines with whole wave numbers), so it tiles seamlessly and
    the background can pan forever."""
    rng = _rng(seed, _TEXTURE)
    yy, xx = np.mgrid[0:period, 0:period].astype(np.float32) * np.float32(2 * np.pi / period)  # (P, P) each
    tile = np.zeros((period, period), dtype=np.float32)
    for _ in range(8):
        kx, ky = (int(k) for k in rng.integers(-4, 5, size=2))
        if kx == ky == 0:
            continue
        amp = np.float32(1 / math.hypot(kx, ky))  # longer waves stronger: big soft blobs
        tile += amp * np.cos(kx * xx + ky * yy + np.float32(rng.uniform(0, 2 * np.pi)))
    tile /= max(float(np.abs(tile).max()), 1e-6)
    tile.setflags(write=False)
    return tile, float(rng.uniform(0, 2 * np.pi))


def _textured_background(seed: int, size: int, grey: int, contrast: float, pan_px_s: float, t: float) -> np.ndarray:
    """(size, size, 3) uint8: the grey window at time t onto a tile twice the frame's side, panned
    pan_px_s * t px along the script's direction (wrapping around the tile). The blobs only darken
    `grey`, so bright backgrounds do not clip to white."""
    tile, angle = _texture_tile(seed, 2 * size)
    ox, oy = math.floor(pan_px_s * t * math.cos(angle)), math.floor(pan_px_s * t * math.sin(angle))
    rows, cols = np.arange(oy, oy + size), np.arange(ox, ox + size)
    window = tile.take(rows, axis=0, mode="wrap").take(cols, axis=1, mode="wrap")  # (size, size)
    grey_img = np.clip(np.rint(grey - contrast * (1 + window) / 2), 0, 255).astype(np.uint8)  # (size, size)
    return np.repeat(grey_img[:, :, None], 3, axis=2)  # (size, size, 3)


def _draw_distractors(img: np.ndarray, seed: int, n: int, t: float) -> None:
    """Draw n grey crosses and bars drifting (and bars spinning) across the frame, in place. Grey and
    not a square, circle or triangle: no question can be about them."""
    s = img.shape[0]
    rng = _rng(seed, _DISTRACTORS)
    for i in range(n):
        grey = int(rng.integers(70, 171))
        half = float(rng.uniform(0.03, 0.05)) * s  # half the arm's length, px
        x0, y0 = rng.uniform(half + 2, s - half - 2, size=2)
        speed, heading = float(rng.uniform(0.03, 0.12)) * s, float(rng.uniform(0, 2 * math.pi))
        spin, turn0 = float(rng.uniform(-1.5, 1.5)), float(rng.uniform(0, math.pi))  # rad/s, rad
        cx = _bounce(x0 + speed * math.cos(heading) * t, half + 2, s - half - 2)
        cy = _bounce(y0 + speed * math.sin(heading) * t, half + 2, s - half - 2)
        thick = max(2, int(half / 3))
        arms = (turn0 + spin * t,) if i % 2 else (turn0 + spin * t, turn0 + spin * t + math.pi / 2)  # bar | cross
        for a in arms:
            dx, dy = half * math.cos(a), half * math.sin(a)
            cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), (grey,) * 3, thick, cv2.LINE_AA)


def _camera(img: np.ndarray, seed: int, t: float, flicker: float, noise_std: float) -> np.ndarray:
    """The frame as a camera records it: brightness times 1 + flicker * u(t) (u smooth in t, in [-1, 1]),
    plus Gaussian noise of std noise_std drawn from (seed, t); (H, W, 3) uint8 in and out."""
    rng = _rng(seed, _FLICKER)
    f1, f2 = rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.4)  # Hz: a slow swell and a flutter
    p1, p2 = rng.uniform(0, 2 * math.pi, size=2)
    u = 0.5 * math.sin(2 * math.pi * f1 * t + p1) + 0.5 * math.sin(2 * math.pi * f2 * t + p2)
    out = img.astype(np.float32) * np.float32(1 + flicker * u)
    if noise_std > 0:
        frame_rng = _rng(seed, _NOISE, int(round(t * 1e6)))  # new noise every frame (per microsecond of t)
        out += frame_rng.normal(0.0, noise_std, size=img.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _bounce(x: float, lo: float, hi: float) -> float:
    """Reflect x into [lo, hi] (motion bouncing off walls)."""
    if hi <= lo:
        return (lo + hi) / 2
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)
