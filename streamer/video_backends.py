"""Decoders behind `streamer.frames.open_source`: decord, PyAV and OpenCV, and the choice between them.

- Files: PyAV first, then decord, then OpenCV (`AUTO_ORDER`; PyAV measured faster with flat memory).
  PyAV also classifies what is wrong with a file no backend can read.
- URLs (http/https/rtsp/rtmp/udp/...): PyAV (OpenCV if asked). Webcams (0, "0", "/dev/videoN"): OpenCV.

Each backend only yields the frames a `TimeGrid` keeps, converting to RGB only those, and skips the
others as cheaply as it can: decord steps over short gaps with `next()` and jumps long ones with
`skip_frames()` (which seeks to a keyframe); PyAV seeks to the keyframe before the next tick when that
keyframe lies ahead (demuxer index, or the keyframe spacing seen so far), else decodes without
converting; OpenCV `grab()`s without `retrieve()`. Times are presentation times in seconds from the
stream's start.

This module does not resize, chunk or pace frames (see `streamer.frames`), and reads no audio.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from streamer.errors import (
    ConfigError,
    NoFramesError,
    NotAVideoError,
    SourceError,
    SourceNotFoundError,
    UnsupportedCodecError,
    WebcamError,
)
from streamer.sources import Frame, TimeGrid, VideoSource

log = logging.getLogger(__name__)

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "mms"}
_WEBCAM = re.compile(r"^(\d+|/dev/video\d+)$")
_MAX_BAD_PACKETS = 50  # consecutive undecodable packets before PyAV gives up on a file
_DECORD_SKIP_AT = 12  # frames; longer gaps use decord's skip_frames() (fixed cost of a few ms per call)


def _first_line(error: BaseException) -> str:
    """The first line of an error's text, without decord's "[time] file.cc:line: Error:" prefix."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: (Error: )?", "", line)


class DecordSource(VideoSource):
    """A video file read with decord: all frame times known at open, kept frames reached by index."""

    backend = "decord"

    def __init__(self, path: str):
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg logs to stderr; errors reach us as exceptions
        self.name = path
        self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
        n = len(self._vr)
        if n == 0:
            raise NoFramesError(f"{path} has a video stream but no frames; re-encode or re-download it")
        self._times = self._vr.get_frame_timestamp(range(n))[:, 0].astype(np.float64)  # (n,) start times in s
        self.height, self.width = self._vr.next().shape[:2]  # decodes frame 0: proves the stream decodes
        self.fps = float(self._vr.get_avg_fps()) or None
        self.duration_s = _header_duration(path) or float(self._times[-1]) + (1 / self.fps if self.fps else 0)

    def _read(self, grid: TimeGrid) -> Iterator[Frame]:
        vr, last = self._vr, None
        # Only next(), skip_frames() and seek(0) here: decord 0.6 returns wrong frames for skip_frames()
        # after seek_accurate() (and so after vr[i]).
        vr.seek(0)
        position = 0  # index of the frame vr.next() returns
        for index, t in enumerate(self._times.tolist()):
            if grid.past_end(t):
                return
            if not grid.take(t):
                continue
            try:
                # skip_frames() seeks to a keyframe when that is shorter but costs milliseconds per call;
                # for short gaps decoding the frames in between with next() is cheaper.
                if index - position > _DECORD_SKIP_AT:
                    vr.skip_frames(index - position)
                else:
                    for _ in range(index - position):
                        vr.next()
                        self.frames_decoded += 1
                image = vr.next().asnumpy()  # (H, W, 3) uint8 RGB
            except Exception as error:  # DECORDError (a RuntimeError) on corrupt data, StopIteration at a short end
                self._warn_if_cut(last, error)
                return
            self.frames_decoded += 1
            position, last = index + 1, t
            yield Frame(image, t)
        self._warn_if_cut(float(self._times[-1]))

    def close(self) -> None:
        self._vr = None


class PyAVSource(VideoSource):
    """A file or network stream read with PyAV (FFmpeg): demux, decode, convert only kept frames."""

    backend = "pyav"

    def __init__(self, source: str):
        self.name = source
        match = _URL.match(source)
        scheme = match.group(1).lower() if match else None
        options = {"rtsp_transport": "tcp"} if scheme in ("rtsp", "rtsps") else {}
        try:
            self._container = av.open(source, options=options, timeout=(15.0, 15.0) if scheme else None)
        except FileNotFoundError as error:
            raise SourceNotFoundError(f"no such file: {source}; check the path") from error
        except IsADirectoryError as error:
            raise NotAVideoError(f"{source} is a folder, not a video file; pass a video file") from error
        except PermissionError as error:
            raise SourceError(f"cannot read {source}: permission denied; check the file's permissions") from error
        except (av.FFmpegError, OSError) as error:
            if scheme:
                raise SourceNotFoundError(
                    f"cannot open stream {source} ({_first_line(error)}); "
                    "check the URL and that the server is reachable"
                ) from error
            raise NotAVideoError(
                f"{source} is not a readable video file ({_first_line(error)}); check it is a complete video"
            ) from error
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["no streams"]
            self._container.close()
            raise NotAVideoError(f"{source} has no video stream (only {', '.join(kinds)}); pass a video file")
        stream = self._stream = self._container.streams.video[0]
        if stream.codec_context is None:
            self._container.close()
            raise UnsupportedCodecError(
                f"no decoder for the video codec of {source}; re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
            )
        stream.thread_type = "AUTO"  # frame + slice threads
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._tb = float(stream.time_base)  # seconds per pts tick
        self.duration_s = _duration(self._container, stream)
        self.is_live = scheme in _LIVE_SCHEMES or self.duration_s is None
        self._origin = stream.start_time if stream.start_time is not None and not self.is_live else None  # pts of t=0
        entries = stream.index_entries
        first_ts = entries[0].timestamp if len(entries) else None
        # Index timestamps can be decode times (mp4): a keyframe shows `delay` ticks after its index time.
        self._delay = max(0, (stream.start_time or 0) - first_ts) if first_ts is not None else 0
        self._seeking = not self.is_live  # turned off if a seek ever lands behind where we were
        self._gop_s = None  # longest keyframe interval seen while decoding, s
        self._reads = 0
        self._error: Exception | None = None

    def _time(self, frame: av.VideoFrame, previous: float | None) -> float:
        if frame.pts is None:  # no timestamp: assume the nominal frame rate
            return (previous + 1 / self.fps) if previous is not None and self.fps else (previous or 0.0)
        if self._origin is None:
            self._origin = frame.pts
        return (frame.pts - self._origin) * self._tb

    def _seek(self, t: float) -> bool:
        """Seek to the last keyframe at or before video time t; False if the container cannot."""
        try:
            self._container.seek(round(t / self._tb) + (self._origin or 0), stream=self._stream, backward=True)
        except (av.FFmpegError, OSError) as error:
            log.debug("%s: seek to %.2f s failed (%s); decoding on", self.name, t, _first_line(error))
            self._seeking = False
            return False
        return True

    def _keyframe_before(self, t: float) -> float | None:
        """Video time of the last keyframe at or before t, from the demuxer's index (None: unknown)."""
        entries = self._stream.index_entries
        if len(entries) < 2:
            return None
        ts = round(t / self._tb) + (self._origin or 0) - self._delay
        if entries[len(entries) - 1].timestamp < ts:  # index not built that far yet (mkv grows it while reading)
            return None
        i = entries.search_timestamp(ts, backward=True)
        if i < 0:
            return None
        return (entries[i].timestamp + self._delay - (self._origin or 0)) * self._tb

    def _worth_seeking(self, now: float, target: float) -> bool:
        if not self._seeking or self.fps is None or target - now <= 2 / self.fps:
            return False
        key = self._keyframe_before(target)
        if key is not None:
            return key > now + 0.5 / self.fps
        return self._gop_s is not None and target - now > 1.5 * self._gop_s

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Frames in presentation order from the current position; corrupt packets are skipped."""
        packets = self._container.demux(self._stream)
        bad = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as error:  # unreadable data (e.g. a truncated file)
                self._error = self._error or error
                return
            try:
                frames = packet.decode()
            except av.FFmpegError as error:
                self._error = self._error or error
                bad += 1
                if bad >= _MAX_BAD_PACKETS:
                    return
                continue
            bad = 0
            yield from frames

    def _read(self, grid: TimeGrid) -> Iterator[Frame]:
        self._reads += 1
        if not self.is_live and (self._reads > 1 or grid.start_s > 0):
            self._seek(grid.start_s)
        self._error = None
        frames = self._decode()
        last = last_key = None
        went_back_from = None  # time we seeked away from, to check the seek moved forward
        reached_end = True  # False when end_s stopped us: then a short file is no news
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            self.frames_decoded += 1
            t = self._time(frame, last)
            if went_back_from is not None:
                if t < went_back_from:
                    log.debug("%s: seek landed at %.2f s, behind %.2f s: seeking off", self.name, t, went_back_from)
                    self._seeking = False
                went_back_from = None
            if frame.key_frame:
                if last_key is not None and t > last_key:
                    self._gop_s = max(self._gop_s or 0.0, t - last_key)
                last_key = t
            last = t
            if grid.past_end(t):
                reached_end = False
                break
            if not grid.take(t):
                continue
            image = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8, rows padded for odd widths
            yield Frame(np.ascontiguousarray(image), t)
            if self._worth_seeking(t, grid.next_tick) and self._seek(grid.next_tick):
                frames.close()
                frames = self._decode()
                went_back_from, last_key = t, None
        frames.close()
        if reached_end:
            self._warn_if_cut(last, self._error)

    def close(self) -> None:
        self._container.close()


class OpenCVSource(VideoSource):
    """A file, URL or webcam read with OpenCV: `grab()` every frame, `retrieve()` only kept ones."""

    backend = "opencv"

    def __init__(self, source: str | int, webcam: bool = False):
        self.name = f"webcam {source}" if webcam else str(source)
        url = _URL.match(str(source))
        self.is_live = webcam or bool(url and url.group(1).lower() in _LIVE_SCHEMES)
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a missing camera is our error to report
        try:
            self._cap = cv2.VideoCapture(source)
        finally:
            cv2.utils.logging.setLogLevel(previous)
        self._held = None  # (monotonic time, BGR image) of the frame a webcam gave at open
        if not self._cap.isOpened():
            if webcam:
                raise WebcamError(
                    f"no webcam at {source}; check that a camera is connected and free, or try another index/device"
                )
            raise RuntimeError(f"OpenCV cannot open {source}")
        if webcam:
            ok, image = self._cap.read()
            if not ok:
                self._cap.release()
                raise WebcamError(f"webcam {source} opened but gives no frames; close other programs using it")
            self._held = (time.monotonic(), image)
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or None
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or None
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or None
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if not self.is_live:
            self.duration_s = _header_duration(str(source)) or (count / self.fps if count > 0 and self.fps else None)
        self._t0: float | None = None  # monotonic time of the first live frame
        self._reads = 0

    def _grab(self) -> tuple[bool, float | None, np.ndarray | None]:
        """Advance one frame without converting it: (ok, time in s, BGR image if already read)."""
        if self._held is not None:
            (self._t0, image), self._held = self._held, None
            return True, 0.0, image
        if not self._cap.grab():
            return False, None, None
        if self.is_live:
            now = time.monotonic()
            self._t0 = self._t0 if self._t0 is not None else now
            return True, now - self._t0, None
        return True, self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, None

    def _read(self, grid: TimeGrid) -> Iterator[Frame]:
        self._reads += 1
        if self._reads > 1 and not self.is_live:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        last = None
        while True:
            ok, t, image = self._grab()
            if not ok:
                break
            self.frames_decoded += 1
            last = t
            if grid.past_end(t):
                return
            if not grid.take(t):
                continue
            if image is None:
                ok, image = self._cap.retrieve()  # (H, W, 3) uint8 BGR
                if not ok:
                    continue
            yield Frame(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), t)
        if not self.is_live:
            self._warn_if_cut(last)

    def close(self) -> None:
        self._cap.release()


def _duration(container, stream) -> float | None:
    """Length in seconds from the headers (stream first, then container), None if not known."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        start = container.start_time if container.start_time and container.start_time > 0 else 0
        # Some muxers (mkv) store the end time: subtracting the start never overstates the length.
        return max(container.duration - start, 0) / av.time_base or None
    return None


def _header_duration(path: str) -> float | None:
    """The length PyAV reads from the file's headers, for truncation warnings (None: unknown)."""
    try:
        with av.open(path) as container:
            return _duration(container, container.streams.video[0]) if container.streams.video else None
    except (av.FFmpegError, OSError):
        return None


_FILE_BACKENDS = {"decord": DecordSource, "pyav": PyAVSource, "opencv": OpenCVSource}
# Order tried for files by backend="auto". PyAV comes before decord on measurement (bench/bench_frames.py,
# 1 h of 640x360 30 fps H.264 sampled at 1 fps, 2 busy cores): PyAV 33-36 s with RSS flat (+1 MB); decord
# 91-114 s with RSS +60-185 MB after warm-up, and one of five runs stopped at 90% of the file on an error.
AUTO_ORDER = ("pyav", "decord", "opencv")


def open_video(source: str | int | os.PathLike, backend: str = "auto") -> VideoSource:
    """See `streamer.frames.open_source`."""
    webcam = isinstance(source, str) and _WEBCAM.match(source.strip()) and not Path(source).is_file()
    if isinstance(source, int) or webcam:  # a file named "0" in the working folder stays a file
        if backend not in ("auto", "opencv"):
            raise ConfigError(f"webcams are read with OpenCV; use backend='auto' or 'opencv', not {backend!r}")
        device = int(source) if str(source).strip().isdigit() else str(source).strip()
        return _opened(OpenCVSource(device, webcam=True))
    source = os.fspath(source)
    if _URL.match(source) and not source.startswith("file://"):
        if backend == "decord":
            raise ConfigError("decord reads files only; use backend='auto' or 'pyav' for a URL")
        if backend == "opencv":
            return _opened(_try_opencv(source))
        return _opened(PyAVSource(source))
    path = source.removeprefix("file://")
    if not Path(path).exists():
        raise SourceNotFoundError(f"no such file: {path}; check the path")
    if Path(path).is_dir():
        raise NotAVideoError(f"{path} is a folder, not a video file; pass a video file")
    failures: dict[str, Exception] = {}
    for name in AUTO_ORDER if backend == "auto" else (backend,):
        try:
            return _opened(_FILE_BACKENDS[name](path))
        except ImportError as error:
            failures[name] = error
            if backend != "auto":
                raise ConfigError(f"backend {name} is not installed ({error}); use backend='auto'") from error
        except SourceError as error:
            if backend == "auto" and not isinstance(error, UnsupportedCodecError | NoFramesError):
                raise  # FFmpeg cannot read the container at all: the other backends use FFmpeg too
            failures[name] = error
        except Exception as error:  # each backend fails in its own way; the next one may do better
            failures[name] = error
        log.debug("%s: %s cannot read it: %s", path, name, _first_line(failures[name]))
    raise _diagnose(path, failures)


def _try_opencv(source: str) -> OpenCVSource:
    try:
        return OpenCVSource(source)
    except RuntimeError as error:
        raise SourceNotFoundError(f"OpenCV cannot open {source}; check the URL, or use backend='auto'") from error


def _opened(source: VideoSource) -> VideoSource:
    length = f"{source.duration_s:.1f} s" if source.duration_s is not None else "live"
    fps = f"{source.fps:.3g} fps" if source.fps else "unknown fps"
    log.info("%s: reading with %s (%sx%s, %s, %s)",
             source.name, source.backend, source.width, source.height, fps, length)
    return source


def _diagnose(path: str, failures: dict[str, Exception]) -> SourceError:
    """The error to raise when no backend could open `path`: PyAV's classification when it has one."""
    if isinstance(failures.get("pyav"), SourceError):
        return failures["pyav"]
    try:
        with PyAVSource(path) as source:
            next(iter(source))  # PyAV opens and decodes it: the backends tried have their own problem
    except SourceError as error:
        return error
    except Exception as error:  # noqa: BLE001 - only used to word the message
        log.debug("%s: PyAV cannot classify it either: %s", path, _first_line(error))
    tried = "; ".join(f"{name}: {_first_line(e)}" for name, e in failures.items())
    hint = "use backend='auto'" if len(failures) == 1 else "re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
    return UnsupportedCodecError(f"cannot decode {path} ({tried}); {hint}")
