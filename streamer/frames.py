"""Frame sampler: turn any video source into timed RGB frames and chunks of frames.

What it does:
- opens a video file, a URL/RTSP stream, a webcam, or frames pushed in from another thread
  (`open_source`, `PushSource`); the file/stream/webcam decoders live in `streamer.video_backends`;
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

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from streamer.errors import ConfigError, NoFramesError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav", "opencv")
_EPS = 1e-4  # s; timestamps closer than this count as equal (decord reports float32 times)


@dataclass(frozen=True)
class Frame:
    """One sampled frame."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    time_s: float  # presentation time in seconds from the start of the source


@dataclass(frozen=True)
class Chunk:
    """A group of consecutive sampled frames, fed to the model in one forward pass."""

    frames: tuple[Frame, ...]
    index: int = 0  # 0-based chunk number within the stream

    @property
    def times(self) -> list[float]:
        return [f.time_s for f in self.frames]


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
        if not (isinstance(self.fps, int | float) and math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"fps must be a positive number of frames per second, got {self.fps!r}")
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ConfigError(f"start_s must be >= 0 seconds, got {self.start_s!r}")
        if self.end_s is not None and not self.end_s > self.start_s:
            raise ConfigError(f"end_s ({self.end_s!r}) must be after start_s ({self.start_s!r}), or None")
        if self.max_side is not None and not (isinstance(self.max_side, int) and self.max_side >= 1):
            raise ConfigError(f"max_side must be a positive number of pixels or None, got {self.max_side!r}")
        if self.chunk_frames is not None and self.chunk_seconds is not None:
            raise ConfigError(
                "set either chunk_frames or chunk_seconds, not both (use chunk_frames=None to chunk by duration)"
            )
        if self.chunk_frames is None and self.chunk_seconds is None:
            raise ConfigError("set chunk_frames (frames per chunk) or chunk_seconds (seconds per chunk)")
        if self.chunk_frames is not None and not (isinstance(self.chunk_frames, int) and self.chunk_frames >= 1):
            raise ConfigError(f"chunk_frames must be an integer >= 1, got {self.chunk_frames!r}")
        if self.chunk_seconds is not None and not (math.isfinite(self.chunk_seconds) and self.chunk_seconds > 0):
            raise ConfigError(f"chunk_seconds must be > 0, got {self.chunk_seconds!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


class TimeGrid:
    """Which frames to keep: the first frame at or after each tick `start_s + k / fps`.

    Frames must be offered in time order. Each frame covers every tick up to its own time, so a frame
    is kept at most once and a gap in the video skips ticks instead of repeating a frame.
    `fps=None` keeps every frame from `start_s` on.
    """

    def __init__(self, fps: float | None = None, start_s: float = 0.0, end_s: float | None = None):
        self.fps, self.start_s, self.end_s = fps, start_s, end_s
        self.next_tick = start_s  # earliest time the next kept frame may have

    def past_end(self, t: float) -> bool:
        """True once `t` is at or after end_s: nothing later can be kept."""
        return self.end_s is not None and t >= self.end_s - _EPS

    def take(self, t: float) -> bool:
        """Offer a frame at time `t`; True if it is kept (then the grid moves past `t`)."""
        if t < self.next_tick - _EPS or self.past_end(t):
            return False
        if self.fps is not None:
            k = math.floor((t - self.start_s) * self.fps + _EPS * self.fps) + 1  # first tick after t
            self.next_tick = self.start_s + k / self.fps
        else:
            self.next_tick = t + _EPS
        return True


class VideoSource:
    """A source of timed frames; iterate for every frame at the native rate, or call `sample()`.

    Attributes (None where the source cannot know): backend ("decord" | "pyav" | "opencv" | "push"),
    duration_s, fps, width, height; is_live (a stream/webcam/push source: no seeking, times from its
    own clock); frames_decoded (frames the decoder produced so far, where the backend can count).
    Iterating a file source again starts over; do not iterate one source from two places at once.
    Backends implement `_read(grid)`.
    """

    backend: str = "none"
    name: str = ""  # path, URL or device, for messages
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    is_live: bool = False
    frames_decoded: int = 0
    _empty_is_error = True  # sample() raises NoFramesError when nothing at all came out

    def _read(self, grid: TimeGrid) -> Iterator[Frame]:
        """Yield the frames `grid` keeps, in time order, full size RGB."""
        raise NotImplementedError

    def sample(self, fps: float | None = None, start_s: float = 0.0, end_s: float | None = None) -> Iterator[Frame]:
        """Frames on the grid of `fps` ticks per second (None: every frame) in [start_s, end_s).

        Raises NoFramesError if a file or stream gives no frame in that range at all.
        """
        grid = TimeGrid(fps, start_s, end_s)
        kept = 0
        for frame in self._read(grid):
            kept += 1
            yield frame
        if kept == 0 and self._empty_is_error:
            if self.frames_decoded > 0 or start_s > 0 or end_s is not None:
                length = f"{self.duration_s:.2f} s" if self.duration_s is not None else "of unknown length"
                raise NoFramesError(
                    f"no frames between {start_s:g} s and {end_s if end_s is not None else 'the end'} in "
                    f"{self.name} (video is {length}); choose start_s/end_s inside the video"
                )
            raise NoFramesError(
                f"no frame could be decoded from {self.name}; it is empty or corrupt: re-encode or re-download it"
            )

    def __iter__(self) -> Iterator[Frame]:
        return self.sample()

    def close(self) -> None:
        """Release the decoder/device; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} backend={self.backend} {self.width}x{self.height} fps={self.fps}>"

    def _warn_if_cut(self, last_s: float | None, error: Exception | None = None) -> None:
        """Log a warning when decoding stopped on an error or well before the length the header announces."""
        if error is not None:
            where = f"{last_s:.2f} s" if last_s is not None else "the start"
            log.warning(
                "%s: decoding stopped at %s (%s); the file is truncated or corrupt, frames up to there were kept",
                self.name, where, str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
        elif self.duration_s and last_s is not None and not self.is_live:
            slack = max(1.0, 3.0 / self.fps) if self.fps else 1.0
            if last_s < self.duration_s - slack:
                log.warning(
                    "%s: video ends at %.2f s but its header says %.2f s; the file looks truncated, "
                    "frames up to there were kept",
                    self.name, last_s, self.duration_s,
                )


class PushSource(VideoSource):
    """Frames handed in one at a time from another thread (e.g. the web UI's webcam callback).

    `push(image, time_s)` from any thread; iterate (or `sample_frames`) from one consumer thread;
    iteration blocks until a frame arrives and ends after `close()` once pending frames are drained.
    `time_s` defaults to wall-clock seconds since the first push; times must not decrease.
    At most `max_pending` frames wait; when the consumer falls behind the oldest are dropped
    (counted in `dropped`), so a slow model never makes memory grow.
    """

    backend = "push"
    is_live = True
    _empty_is_error = False  # closing before any push is a normal end

    def __init__(self, max_pending: int = 64, name: str = "pushed frames"):
        if max_pending < 1:
            raise ConfigError(f"max_pending must be >= 1, got {max_pending!r}")
        self.name = name
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._t0: float | None = None  # time.monotonic() of the first push
        self._last_s = -math.inf

    def push(self, image: np.ndarray, time_s: float | None = None) -> bool:
        """Queue one (H, W, 3) or (H, W, 4) uint8 RGB(A) image; returns False (frame ignored) after close()."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"push() expects an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        image = np.array(image[:, :, :3], copy=True, order="C")  # (H, W, 3); the caller may reuse its buffer
        with self._cond:
            if self._closed:
                log.debug("%s: frame pushed after close() ignored", self.name)
                return False
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            t = now - self._t0 if time_s is None else float(time_s)
            if t < self._last_s:
                raise ValueError(f"push() times must not decrease: got {t:.3f} s after {self._last_s:.3f} s")
            self._last_s = t
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("%s: consumer is behind, %d frame(s) dropped so far", self.name, self.dropped)
            self._pending.append(Frame(image, t))
            self.frames_decoded += 1
            self._cond.notify()
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _read(self, grid: TimeGrid) -> Iterator[Frame]:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                frame = self._pending.popleft()
            if grid.past_end(frame.time_s):
                return
            if grid.take(frame.time_s):
                yield frame


def open_source(source: str | int | os.PathLike, backend: str = "auto") -> VideoSource:
    """Open a video file, URL (http/https/rtsp/rtmp/...), or webcam (0, "0", "/dev/video0").

    Files try PyAV, then decord, then OpenCV (`backend="auto"`), or only the backend named; URLs are
    read with PyAV and webcams with OpenCV. The chosen decoder is in `.backend` and logged.
    Raises SourceNotFoundError, NotAVideoError, UnsupportedCodecError, NoFramesError, WebcamError,
    or ConfigError for an unknown backend.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    from streamer import video_backends  # the backends import this module: import them late

    return video_backends.open_video(source, backend)


def resize_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (H, W, 3) so max(H, W) <= max_side keeping the aspect ratio; never upscale."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _paced(frames: Iterable[Frame]) -> Iterator[Frame]:
    """Release each frame no earlier than its video time after the first one, on the wall clock."""
    wall0 = video0 = None
    for frame in frames:
        if wall0 is None:
            wall0, video0 = time.monotonic(), frame.time_s
        delay = wall0 + (frame.time_s - video0) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield frame


def sample_frames(source: VideoSource | str | int | os.PathLike, cfg: SamplerConfig) -> Iterator[Frame]:
    """Sampled, resized (and, if cfg.realtime, paced) frames of `source`.

    A path/URL/device is opened with `cfg.backend` on the first `next()` (errors surface there) and
    closed when the iterator ends; a VideoSource/PushSource passed in stays open.
    """
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


def chunk_frames(frames: Iterable[Frame], cfg: SamplerConfig) -> Iterator[Chunk]:
    """Group frames into chunks of `cfg.chunk_frames` frames, or by `cfg.chunk_seconds` windows.

    Duration windows are [start_s + k * chunk_seconds, start_s + (k + 1) * chunk_seconds); a window
    is emitted when a later frame arrives (or at the end), empty windows are skipped. The last chunk
    may be short. Chunk indices count emitted chunks from 0.
    """
    pending: list[Frame] = []
    index = 0
    window = None  # window number of the frames in `pending` (duration mode)
    for frame in frames:
        if cfg.chunk_frames is None:
            w = math.floor((frame.time_s - cfg.start_s) / cfg.chunk_seconds + _EPS)
            if pending and w != window:
                yield Chunk(tuple(pending), index)
                index, pending = index + 1, []
            window = w
        pending.append(frame)
        if cfg.chunk_frames is not None and len(pending) == cfg.chunk_frames:
            yield Chunk(tuple(pending), index)
            index, pending = index + 1, []
    if pending:
        yield Chunk(tuple(pending), index)


def iter_chunks(source: VideoSource | str | int | os.PathLike, cfg: SamplerConfig) -> Iterator[Chunk]:
    """Open (if needed), sample and chunk `source` in one call."""
    return chunk_frames(sample_frames(source, cfg), cfg)
