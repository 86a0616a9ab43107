"""Frame sampler: turn any video source into timed RGB frames and chunks of frames.

What it does:
- takes a path, URL or webcam (opened with `opening.open_source`) or any `VideoSource` (e.g. a `PushSource`);
- keeps the frames on a time grid of `fps` frames per second of *video* time, chosen by presentation
  timestamps (variable-frame-rate videos get their true times), between `start_s` and `end_s`;
- resizes so the longer side is at most `max_side` (never upscales), outputs RGB uint8;
- groups frames into chunks by count or by duration, and can release them at wall-clock rate.

Everything is a lazy iterator: memory does not grow with the length of the video.

What it does not do: audio, scene detection, choosing frames by content, or holding a video in
memory. It never repeats a source frame: if no new frame arrived since the last tick (a static
screen recording, a dropped webcam frame), that tick is simply skipped.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from streamer.errors import ConfigError, check_number
from streamer.video import frame as video_frame
from streamer.video.frame import EPS, Chunk, Frame, VideoSource
from streamer.video.opening import check_backend, open_source

log = logging.getLogger(__name__)



@dataclass
class SamplerConfig:
    """How to sample, resize, chunk and pace the frames of one source."""

    fps: float = 1.0  # frames kept per second of video time (ticks at start_s + k / fps)
    start_s: float = 0.0  # first video time to keep, in seconds
    end_s: float | None = None  # keep frames with time < end_s; None = until the source ends
    max_side: int | None = 384  # longer side limit in pixels (aspect kept, never upscaled); None = keep
    chunk_frames: int | None = 4  # frames per chunk; None = chunk by chunk_seconds instead
    chunk_seconds: float | None = None  # video seconds per chunk (windows from start_s); needs chunk_frames=None
    realtime: bool = False  # release frames at wall-clock rate (rehearse a live stream); False = fast as possible
    backend: str = "auto"  # decoder used when a path/URL is given: auto | decord | pyav | opencv

    def __post_init__(self):
        check_number("fps", self.fps, 0, low_open=True)
        check_number("start_s", self.start_s, 0)
        check_number("end_s", self.end_s, none_ok=True)
        if self.end_s is not None and not self.end_s > self.start_s:
            raise ConfigError(f"end_s ({self.end_s!r}) must be after start_s ({self.start_s!r}), or None")
        check_number("max_side", self.max_side, 1, integer=True, none_ok=True)
        if self.chunk_frames is not None and self.chunk_seconds is not None:
            raise ConfigError(
                "set either chunk_frames or chunk_seconds, not both (use chunk_frames=None to chunk by duration)"
            )
        if self.chunk_frames is None and self.chunk_seconds is None:
            raise ConfigError("set chunk_frames (frames per chunk) or chunk_seconds (seconds per chunk)")
        check_number("chunk_frames", self.chunk_frames, 1, integer=True, none_ok=True)
        check_number("chunk_seconds", self.chunk_seconds, 0, low_open=True, none_ok=True)
        if not isinstance(self.realtime, bool):
            raise ConfigError(f"realtime must be True or False, got {self.realtime!r}")
        check_backend(self.backend)


def resize_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (H, W, 3) so max(H, W) <= max_side keeping the aspect ratio; never upscale."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _paced(frames: Iterable[Frame]) -> Iterator[Frame]:
    """Release each frame no earlier than its video time after the first one, on the wall clock (`WALL`)."""
    wall0 = video0 = None
    for frame in frames:
        if wall0 is None:
            wall0, video0 = video_frame.WALL.now(), frame.time_s
        delay = wall0 + (frame.time_s - video0) - video_frame.WALL.now()
        if delay > 0:
            video_frame.WALL.sleep(delay)
        yield frame


class LagMeter:
    """How far the model runs behind a live stream (webcam, RTSP, a file played in real time).

    After each chunk is in the cache, `update(times, work_s)` measures the lag (wall seconds since the first
    frame minus video seconds since it) and the frames the sampling grid expected but never got (skipped by
    the source or dropped by a full queue because the model was busy). It returns a warning the first time
    the lag passes `warn_s` or a quarter of the frames go missing, and again each time the lag doubles,
    naming a frame rate the model keeps up with; otherwise None.
    """

    def __init__(self, fps: float, warn_s: float = 5.0, clock=None):
        check_number("fps", fps, 0, low_open=True)
        check_number("warn_s", warn_s, 0, low_open=True)
        self.fps, self.warn_s, self.clock = fps, warn_s, clock or video_frame.WALL.now
        self.lag_s = 0.0
        self.missed = 0  # grid frames that never reached the model
        self._wall0 = self._video0 = None
        self._frames = 0
        self._work_s = 0.0  # model seconds spent on those frames
        self._warn_at = warn_s

    def update(self, times: Sequence[float], work_s: float) -> str | None:
        if not times:
            return None
        now = self.clock()
        if self._wall0 is None:
            self._wall0, self._video0 = now - work_s, times[0]  # the first frame arrived when its work began
        self._frames += len(times)
        self._work_s += work_s
        span = times[-1] - self._video0
        self.lag_s = max(0.0, (now - self._wall0) - span)
        self.missed = max(0, math.floor(span * self.fps + EPS) + 1 - self._frames)
        expected = self._frames + self.missed
        behind = self.lag_s >= self._warn_at or (expected >= 8 and self.missed > expected / 4 and self._warn_at == self.warn_s)
        if not behind:
            return None
        self._warn_at = max(self._warn_at, self.lag_s) * 2
        per_frame = self._work_s / self._frames
        keeps_up = next((f for f in (2, 1, 0.5, 0.25, 0.2, 0.1, 0.05) if f * per_frame <= 0.8), 0.05)
        return (f"falling behind the live stream: {self.lag_s:.0f} s behind, {self.missed} of {expected} frames "
                f"skipped; the model takes {per_frame:.2f} s per frame, so sample at {keeps_up:g} fps or less "
                f"(now {self.fps:g}), or use smaller frames or a GPU")


def sample_frames(source: VideoSource | str | int | os.PathLike, cfg: SamplerConfig) -> Iterator[Frame]:
    """Sampled, resized (and, if cfg.realtime, paced) frames of `source`.

    A path/URL/device is opened with `cfg.backend` on the first `next()` (errors surface there) and
    closed when the iterator ends; a VideoSource/PushSource passed in stays open.
    """
    if not isinstance(cfg, SamplerConfig):
        raise ConfigError(f"sampling takes a SamplerConfig, got {type(cfg).__name__}")
    if isinstance(source, VideoSource):
        yield from _sample_open(source, cfg)
        return
    with open_source(source, cfg.backend) as opened:
        yield from _sample_open(opened, cfg)


def _sample_open(source: VideoSource, cfg: SamplerConfig) -> Iterator[Frame]:
    frames: Iterable[Frame] = source.sample(cfg.fps, cfg.start_s, cfg.end_s)
    if cfg.realtime and not source.is_live:  # a live source already arrives in real time
        frames = _paced(frames)
    for frame in frames:
        image = resize_max_side(frame.image, cfg.max_side)
        yield frame if image is frame.image else Frame(image, frame.time_s)


def chunk_frames(frames: Iterable[Frame], cfg: SamplerConfig, cut_at: Iterable[float] = ()) -> Iterator[Chunk]:
    """Group frames into chunks of `cfg.chunk_frames` frames, or by `cfg.chunk_seconds` windows.

    Duration windows are [start_s + k * chunk_seconds, start_s + (k + 1) * chunk_seconds); a window
    is emitted when a later frame arrives (or at the end), empty windows are skipped. A chunk is also
    cut short before the first frame after each time in `cut_at` (e.g. when a question is due), so no
    chunk holds frames from both sides of a cut. The last chunk may be short. Chunk indices count
    emitted chunks from 0.
    """
    cuts = sorted(cut_at)
    pending: list[Frame] = []
    index = 0
    window = None  # window number of the frames in `pending` (duration mode)
    for frame in frames:
        cut = False
        while cuts and frame.time_s > cuts[0]:
            cuts.pop(0)
            cut = True
        if cfg.chunk_frames is None:
            w = math.floor((frame.time_s - cfg.start_s) / cfg.chunk_seconds + EPS)
            cut = cut or w != window
            window = w
        if pending and cut:
            yield Chunk(tuple(pending), index)
            index, pending = index + 1, []
        pending.append(frame)
        if cfg.chunk_frames is not None and len(pending) == cfg.chunk_frames:
            yield Chunk(tuple(pending), index)
            index, pending = index + 1, []
    if pending:
        yield Chunk(tuple(pending), index)


def chunks_and_stops(frames: Iterable[Frame], cfg: SamplerConfig, stops: Sequence[float]) -> Iterator[Chunk | int]:
    """Chunks cut at the (sorted) times `stops`, and between them the index of each stop, yielded as soon
    as every frame up to its time has been yielded; stops after the last frame come at the end.

    A question asked when its stop is yielded sees exactly the frames with time <= the stop's time.
    """
    if list(stops) != sorted(stops):
        raise ValueError(f"stops must be sorted, got {list(stops)}")
    i = 0
    for chunk in chunk_frames(frames, cfg, cut_at=stops):
        while i < len(stops) and chunk.frames[0].time_s > stops[i]:
            yield i
            i += 1
        yield chunk
    yield from range(i, len(stops))


def iter_chunks(source: VideoSource | str | int | os.PathLike, cfg: SamplerConfig) -> Iterator[Chunk]:
    """Open (if needed), sample and chunk `source` in one call."""
    return chunk_frames(sample_frames(source, cfg), cfg)
