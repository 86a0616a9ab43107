"""Opening a video source: which decoder reads what, and what to say when none can.

- Files: PyAV first, then decord, then OpenCV (`AUTO_ORDER`; PyAV measured faster with flat memory).
  PyAV also classifies what is wrong with a file no backend can read.
- URLs (http/https/rtsp/rtmp/udp/...): PyAV (OpenCV if asked). Webcams (0, "0", "/dev/videoN"): OpenCV.
- A local path must be a regular file: a named pipe, socket, device (other than a webcam) or folder
  is refused at once, since FFmpeg would wait on a pipe forever.

The decoders themselves live in `streamer.video.decode`; resizing, chunking and pacing in
`streamer.frames`.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from streamer.errors import (
    ConfigError,
    NoFramesError,
    NotAVideoError,
    NotOneFileError,
    SourceError,
    SourceNotFoundError,
    UnsupportedCodecError,
    first_line,
)
from streamer.video.decode import URL
from streamer.video.decode_decord import DecordSource
from streamer.video.decode_opencv import OpenCVSource
from streamer.video.decode_pyav import PyAVSource
from streamer.video.frame import VideoSource

log = logging.getLogger(__name__)

_WEBCAM = re.compile(r"^(\d+|/dev/video\d+)$")

_FILE_BACKENDS = {"decord": DecordSource, "pyav": PyAVSource, "opencv": OpenCVSource}
# Order tried for files by backend="auto". PyAV comes before decord on measurement (bench/bench_frames.py,
# 1 h of 640x360 30 fps H.264 sampled at 1 fps, 2 busy cores): PyAV 33-36 s with RSS flat (+1 MB); decord
# 91-114 s with RSS +60-185 MB after warm-up, and one of five runs stopped at 90% of the file on an error.
AUTO_ORDER = ("pyav", "decord", "opencv")
BACKENDS = ("auto", *AUTO_ORDER)  # what `backend` may name, here, in SamplerConfig and in the CLI's --backend


def check_backend(backend: str) -> None:
    """ConfigError unless `backend` is one of BACKENDS."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def open_source(source: str | int | os.PathLike, backend: str = "auto", single_file: bool = False) -> VideoSource:
    """Open a video file, URL (http/https/rtsp/rtmp/...), or webcam (0, "0", "/dev/video0").

    Files try PyAV, then decord, then OpenCV (`backend="auto"`), or only the backend named; URLs are
    read with PyAV and webcams with OpenCV. The chosen decoder is in `.backend` and logged. A text file
    is refused (FFmpeg would draw it as video). `single_file=True` (an upload): `source` must be a local
    file, read by PyAV as the one media file it is; a playlist, image sequence, list of files or URL is
    refused with NotOneFileError (docs/sources.md).
    Raises SourceNotFoundError, NotAVideoError, NotOneFileError, UnsupportedCodecError, NoFramesError,
    WebcamError, or ConfigError for an unknown backend.
    """
    check_backend(backend)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    if isinstance(source, bool) or not isinstance(source, str | int | os.PathLike):
        raise ConfigError(f"a source is a path, URL or webcam index, got {type(source).__name__}")
    if single_file:
        return _opened(_single_file(source, backend))
    webcam = isinstance(source, str) and _WEBCAM.match(source.strip()) and not Path(source).is_file()
    if isinstance(source, int) or webcam:  # a file named "0" in the working folder stays a file
        if backend not in ("auto", "opencv"):
            raise ConfigError(f"webcams are read with OpenCV; use backend='auto' or 'opencv', not {backend!r}")
        device = int(source) if str(source).strip().isdigit() else str(source).strip()
        return _opened(OpenCVSource(device, webcam=True))
    source = os.fspath(source)
    if URL.match(source) and not source.startswith("file://"):
        if backend == "decord":
            raise ConfigError("decord reads files only; use backend='auto' or 'pyav' for a URL")
        return _opened(_interruptible(OpenCVSource if backend == "opencv" else PyAVSource, source))
    path = source.removeprefix("file://")
    _check_regular_file(path)
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
        log.debug("%s: %s cannot read it: %s", path, name, first_line(failures[name]))
    raise _diagnose(path, failures)


def _single_file(source: str | int | os.PathLike, backend: str) -> VideoSource:
    """A local path read as the one media file it is (an upload), by PyAV alone: decord and OpenCV bring their
    own FFmpeg, which would follow a playlist's entries."""
    if backend not in ("auto", "pyav"):
        raise ConfigError(f"a single file (an upload) is read with PyAV only; use backend='auto' or 'pyav', "
                          f"not {backend!r}")
    path = os.fspath(source) if not isinstance(source, int) else str(source)
    if URL.match(path):
        raise NotOneFileError(f"{path} is a URL; only a video file can be read here")
    _check_regular_file(path)
    return PyAVSource(path, single_file=True)


def _interruptible(open_stream: Callable[[str], VideoSource], url: str) -> VideoSource:
    """`open_stream(url)` in a worker thread while this thread waits, so Ctrl-C ends the wait at once.

    FFmpeg retries its network waits through EINTR, and PyAV's timeout callback swallows the
    KeyboardInterrupt raised meanwhile: opened in this thread, a stalled server would keep a Ctrl-C
    waiting for the whole network timeout and then lose it. A source the worker opens after the caller
    gave up is closed.
    """
    result: dict[str, VideoSource | BaseException] = {}
    abandoned = threading.Event()

    def work():
        try:
            result["source"] = open_stream(url)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            result["error"] = error
        if abandoned.is_set() and "source" in result:
            result["source"].close()

    worker = threading.Thread(target=work, name="open-stream", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)  # returns as soon as the worker ends; the timeout only lets signals in
    except KeyboardInterrupt:
        abandoned.set()
        if "source" in result:
            result["source"].close()
        raise
    if "error" in result:
        raise result["error"]
    return result["source"]


def _check_regular_file(path: str) -> None:
    """Refuse, at once, a path that is not a regular file (after symlinks): FFmpeg would wait forever
    for a writer on a named pipe, read a device without end, and cannot read a folder or a socket."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:  # ValueError: a NUL in the path
        raise SourceNotFoundError(f"no such file: {path}; check the path") from error
    except OSError as error:
        raise SourceError(f"cannot read {path} ({error.strerror}); check the path and its permissions") from error
    if stat.S_ISREG(mode):
        return
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")]
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    hint = "; a webcam is /dev/videoN or its index" if kind == "a device" else ""
    raise NotAVideoError(f"{path} is {kind}, not a video file; pass a video file{hint}")


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
        log.debug("%s: PyAV cannot classify it either: %s", path, first_line(error))
    tried = "; ".join(f"{name}: {first_line(e)}" for name, e in failures.items())
    hint = "use backend='auto'" if len(failures) == 1 else "re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
    return UnsupportedCodecError(f"cannot decode {path} ({tried}); {hint}")
