"""What every video source is: timed frames (`Frame`) and the groups fed to a model at once (`Chunk`), the
time grid that picks which to keep (`TimeGrid`), the source interface (`VideoSource`) and the source fed
from another thread (`PushSource`).

The decoders (`decode_*.py`) implement `VideoSource`; the sampler (`sample.py`) consumes it.
This module decodes nothing and imports neither of them.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streamer.errors import ConfigError, NoFramesError, check_number, first_line

log = logging.getLogger(__name__)

class WallClock:
    """Wall time where the stream meets it: a pushed frame's default time, the pacing of `realtime` replay and the
    lag behind a live stream (`sample.py`). Tests swap `frame.WALL` for a clock they move themselves."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


WALL = WallClock()
EPS = 1e-4  # s; timestamps closer than this count as equal (decord reports float32 times)
MAX_TIME_S = 1e10  # s (317 years); a later frame time is a broken clock, not a video


@dataclass(frozen=True)
class Frame:
    """One sampled frame."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, H and W >= 1
    time_s: float  # presentation time in seconds from the start of the source

    def __post_init__(self):
        image = self.image
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and min(image.shape[:2]) >= 1):
            what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ConfigError(f"Frame.image must be an (H, W, 3) uint8 RGB image of at least 1x1 pixels, got {what}")
        check_number("Frame.time_s", self.time_s, 0, MAX_TIME_S)


@dataclass(frozen=True)
class Chunk:
    """A group of consecutive sampled frames, fed to the model in one forward pass."""

    frames: tuple[Frame, ...]
    index: int = 0  # 0-based chunk number within the stream

    def __post_init__(self):
        if not isinstance(self.frames, tuple | list) or not all(isinstance(f, Frame) for f in self.frames):
            raise ConfigError(f"Chunk.frames must be a sequence of Frame, got {type(self.frames).__name__}")
        check_number("Chunk.index", self.index, 0, integer=True)

    @property
    def times(self) -> list[float]:
        return [f.time_s for f in self.frames]


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
        return self.end_s is not None and t >= self.end_s - EPS

    def take(self, t: float) -> bool:
        """Offer a frame at time `t`; True if it is kept (then the grid moves past `t`)."""
        if t < self.next_tick - EPS or self.past_end(t):
            return False
        if self.fps is not None:
            k = math.floor((t - self.start_s) * self.fps + EPS * self.fps) + 1  # first tick after t
            self.next_tick = self.start_s + k / self.fps
        else:
            self.next_tick = t + EPS
        return True


JUMP_S = 10.0  # s; where timestamps may restart (live, MPEG-TS), a leap further ahead is a discontinuity (as FFmpeg)
REORDER_S = 0.25  # s; a step back within this (or 5 frames) is frames out of order, not a discontinuity


class StreamClock:
    """Stream time from a decoder's timestamps that keeps moving across a discontinuity, as players do.

    A timestamp that goes back by more than REORDER_S or five frames (segments of a TS file written one after
    another, a camera whose encoder restarted), or with `leaps` (live sources, MPEG-TS) one more than JUMP_S or
    three frames ahead, is a discontinuity: the stream time goes on one frame interval after the latest. The
    first one of a read is logged as a warning; `jumped` says there was one. A smaller step back (frames out of
    order) passes as it is. Deterministic: a file gives the same times every run.
    """

    def __init__(self, name: str, fps: float | None, leaps: bool):
        self.name, self.step, self.leaps = name, 1 / fps if fps else 1 / 30, leaps
        self.offset, self.last, self.jumped = 0.0, None, False

    def time(self, t: float | None) -> float:
        """Stream time of a frame whose timestamp is `t` seconds (None: one frame after the last)."""
        last = self.last
        if t is None:
            now = last + self.step if last is not None else 0.0
        else:
            now = t + self.offset
            back = last - now if last is not None else 0.0
            if back > max(REORDER_S, 5 * self.step) or (self.leaps and -back > max(JUMP_S, 3 * self.step)):
                if not self.jumped:
                    log.warning("%s: timestamps jump from %.2f s to %.2f s; treated as a discontinuity, the stream "
                                "time goes on from %.2f s", self.name, last - self.offset, t, last + self.step)
                self.offset += last + self.step - now
                self.jumped, now = True, last + self.step
        self.last = now if last is None else max(last, now)
        return now


class VideoSource:
    """A source of timed frames; iterate for every frame at the native rate, or call `sample()`.

    Attributes (None where the source cannot know): backend ("decord" | "pyav" | "opencv" | "push"),
    duration_s, fps, width, height (of the frames as shown: a rotated phone video is upright; PyAV
    learns a rotation from the first frame it converts); is_live (a stream/webcam/push source: no
    seeking, times from its own clock); frames_decoded (frames the decoder produced so far, where the
    backend can count).
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
    cut: str | None = None  # why the last read ended early (a truncated or corrupt file), for the user to see
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
                f"no frame came from {self.name} before the stream ended; check that it is sending video"
                if self.is_live else
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
        """Log a warning, and keep it in `cut`, when decoding stopped on an error or well before the length
        the header announces, or a live stream ended (its server stopped sending or went away)."""
        self.cut = None
        if last_s is None:  # nothing was read: the caller's NoFramesError says so, in one line
            return
        where = f"{last_s:.2f} s"
        if error is not None:
            self.cut = (f"the stream broke off at {where} ({first_line(error)}); frames up to there were kept"
                        if self.is_live else f"decoding stopped at {where} ({first_line(error)}); the file is "
                        "truncated or corrupt, frames up to there were kept")
        elif self.is_live:
            self.cut = f"the stream ended at {where} (its server stopped sending); frames up to there were kept"
        elif self.duration_s and not self.is_live:
            slack = max(1.0, 3.0 / self.fps) if self.fps else 1.0
            if last_s < self.duration_s - slack:
                self.cut = (f"video ends at {last_s:.2f} s but its header says {self.duration_s:.2f} s; the file "
                            "looks truncated, frames up to there were kept")
        if self.cut:
            log.warning("%s: %s", self.name, self.cut)


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
        check_number("max_pending", max_pending, 1, integer=True)
        self.name = name
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._t0: float | None = None  # WALL.now() at the first push
        self._last_s = -math.inf

    def push(self, image: np.ndarray, time_s: float | None = None) -> bool:
        """Queue one (H, W, 3) or (H, W, 4) uint8 RGB(A) image (H, W >= 1); returns False (frame ignored) after
        close()."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
            raise ConfigError(f"push() expects an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        image = np.array(image[:, :, :3], copy=True, order="C")  # (H, W, 3); the caller may reuse its buffer
        with self._cond:
            if self._closed:
                log.debug("%s: frame pushed after close() ignored", self.name)
                return False
            now = WALL.now()
            if self._t0 is None:
                self._t0 = now
            t = now - self._t0 if time_s is None else float(check_number("time_s", time_s, 0, MAX_TIME_S))
            if t < self._last_s:
                raise ConfigError(f"push() times must not decrease: got {t:.3f} s after {self._last_s:.3f} s")
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
