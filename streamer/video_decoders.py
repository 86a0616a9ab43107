"""The decoders behind `streamer.video_backends.open_video`: decord, PyAV and OpenCV, one `VideoSource` each.

Each backend only yields the frames a `TimeGrid` keeps, converting to RGB only those, and skips the
others as cheaply as it can: decord steps over short gaps with `next()` and jumps long ones with
`skip_frames()` (which seeks to a keyframe); PyAV seeks to the keyframe before the next tick when that
keyframe lies ahead (demuxer index, or the keyframe spacing seen so far; never in MPEG-TS and live streams),
else decodes without converting; OpenCV `grab()`s without `retrieve()`. Times are presentation times in s from
the stream's start, kept moving by `StreamClock` where they jump. Frames come out as a player shows them: a
display-matrix rotation (phone videos) is applied (PyAV per frame, OpenCV by its own orientation handling,
decord by itself for 180 degrees; decord 0.6 scrambles 90/270 degrees and joined segments, so it refuses those
files). Network opens and reads give up after `NETWORK_TIMEOUT_S`; Ctrl-C while FFmpeg waits is a
KeyboardInterrupt, never a "bad file" error.

Not here: which backend reads what, checking a path before opening it, and wording what is wrong with
a file no backend can read (`streamer.video_backends`); resizing, chunking and pacing
(`streamer.frames`); audio.
"""

from __future__ import annotations

import errno
import functools
import logging
import re
import time
from collections.abc import Iterator

import av
import cv2
import numpy as np

from streamer.errors import (
    NoFramesError,
    NotAVideoError,
    NotOneFileError,
    SourceError,
    SourceNotFoundError,
    UnsupportedCodecError,
    WebcamError,
    first_line,
)
from streamer.sources import Frame, StreamClock, TimeGrid, VideoSource

log = logging.getLogger(__name__)

URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")  # a URL's scheme
NETWORK_TIMEOUT_S = 15.0  # a stream that does not open, or sends nothing, for this long is given up
_LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "mms"}
# FFmpeg's text-art demuxers draw any text file (a .txt, .nfo, .asc, ...) as frames of characters: refused always
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
# Demuxers that read more than the file they are given: playlists and lists of files (hls, dash, concat, imf),
# image sequences (image2), sibling files (mlv, vobsub), network sessions (sdp) and scripts (avisynth,
# vapoursynth). Refused for a single file (an upload), as are the demuxers that read no file at all (devices,
# lavfi, rtsp, rtp, sap); the CLI reads them where the user named them (docs/sources.md).
REFERENCE_FORMATS = frozenset({"hls", "dash", "concat", "imf", "image2", "mlv", "vobsub", "sdp", "avisynth",
                               "vapoursynth"})
_TS_DISCONT = 0x200  # AVFMT_TS_DISCONT: a format whose timestamps may restart mid-file (MPEG-TS, ...)
_MAX_BAD_PACKETS = 50  # consecutive undecodable packets before PyAV gives up on a file
_DECORD_SKIP_AT = 12  # frames; longer gaps use decord's skip_frames() (fixed cost of a few ms per call)


def _reraise_interrupt(error: BaseException) -> None:
    """Ctrl-C while FFmpeg waits in a system call comes back as EINTR: make it the KeyboardInterrupt it is."""
    if isinstance(error, InterruptedError) or getattr(error, "errno", None) == errno.EINTR:
        raise KeyboardInterrupt from error


def _quarter_turns(degrees: float) -> int:
    """Counter-clockwise quarter turns (as `np.rot90` counts them) for a display rotation in degrees
    counter-clockwise (FFmpeg's display matrix, PyAV's `VideoFrame.rotation`); a phone's portrait is 3."""
    return round(degrees / 90) % 4


class DecordSource(VideoSource):
    """A video file read with decord: all frame times known at open, kept frames reached by index."""

    backend = "decord"

    def __init__(self, path: str):
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg logs to stderr; errors reach us as exceptions
        self.name = path
        duration, turns = _header(path)
        if turns % 2:  # decord applies a display rotation itself, and gets 90/270 degrees wrong (garbled frames)
            raise UnsupportedCodecError(
                f"{path} is rotated by {turns * 90} degrees for display (a phone video), which decord 0.6 "
                "decodes garbled; use backend='pyav' or 'opencv'"
            )
        self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
        n = len(self._vr)
        if n == 0:
            raise NoFramesError(f"{path} has a video stream but no frames; re-encode or re-download it")
        self._times = self._vr.get_frame_timestamp(range(n))[:, 0].astype(np.float64)  # (n,) start times in s
        if n > 1 and np.diff(self._times).min() <= 0:  # decord sorts by timestamp: joined segments interleave
            raise UnsupportedCodecError(f"{path} has timestamps going back, which decord scrambles; use backend='pyav'")
        self.height, self.width = self._vr.next().shape[:2]  # decodes frame 0: proves the stream decodes
        self.fps = float(self._vr.get_avg_fps()) or None
        self.duration_s = duration or float(self._times[-1]) + (1 / self.fps if self.fps else 0)

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

    def __init__(self, source: str, single_file: bool = False):
        """`single_file`: `source` is a local path to read as the one media file it is (an upload): only the
        file protocol, and no demuxer that reads other files (`_single_file_options`)."""
        self.name = source
        match = URL.match(source)
        scheme = match.group(1).lower() if match else None
        options = {"rtsp_transport": "tcp"} if scheme in ("rtsp", "rtsps") else {}
        limits = _single_file_options() if single_file else {}
        try:
            self._container = av.open(source, options=options, container_options=limits,
                                      timeout=NETWORK_TIMEOUT_S if scheme else None)
        except (av.FFmpegError, OSError) as error:
            _reraise_interrupt(error)
            if single_file and isinstance(error, av.ArgumentError):  # the demuxer FFmpeg chose is not allowed
                raise NotOneFileError(
                    f"{source} is not a single video file (a playlist, an image sequence or a list of files makes "
                    "FFmpeg read other files); upload the video itself, e.g. an .mp4, .webm or .mkv file"
                ) from None
            raise _open_error(source, scheme, error) from error
        try:
            _refuse_text(self._container, source)
        except NotAVideoError:
            self._container.close()
            raise
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["no streams"]
            self._container.close()
            raise NotAVideoError(f"{source} has no video stream (only {', '.join(kinds)}); pass a video file")
        stream = self._stream = self._container.streams.video[0]
        if stream.codec_context is None:
            self._container.close()
            if not scheme and not stream.frames and not len(stream.index_entries):  # FFmpeg found no codec, no frame
                raise NotAVideoError(f"{source} is damaged or cut short (its video stream names no codec and holds "
                                     "no frames); check it is a complete video")
            raise UnsupportedCodecError(
                f"no decoder for the video codec of {source}; re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
            )
        stream.thread_type = "AUTO"  # frame + slice threads
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._tb = float(stream.time_base)  # seconds per pts tick
        self.duration_s = _duration(self._container, stream)
        self.is_live = scheme in _LIVE_SCHEMES or (scheme is not None and self.duration_s is None)  # a file ends
        self._origin = stream.start_time if stream.start_time is not None and not self.is_live else None  # pts of t=0
        self._leaps = self.is_live or bool(self._container.format.flags & _TS_DISCONT)  # timestamps may restart
        entries = stream.index_entries
        first_ts = entries[0].timestamp if len(entries) else None
        # Index timestamps can be decode times (mp4): a keyframe shows `delay` ticks after its index time.
        self._delay = max(0, (stream.start_time or 0) - first_ts) if first_ts is not None else 0
        self._seeking = not self._leaps  # not where timestamps restart; off once a seek lands behind or time jumps
        self._gop_s = None  # longest keyframe interval seen while decoding, s
        self._reads = 0
        self._error: Exception | None = None

    def _time(self, frame: av.VideoFrame, clock: StreamClock) -> float:
        if self._origin is None and frame.pts is not None:
            self._origin = frame.pts
        return clock.time(None if frame.pts is None else (frame.pts - self._origin) * self._tb)

    def _seek(self, t: float) -> bool:
        """Seek to the last keyframe at or before video time t; False if the container cannot."""
        try:
            self._container.seek(round(t / self._tb) + (self._origin or 0), stream=self._stream, backward=True)
        except (av.FFmpegError, OSError) as error:
            _reraise_interrupt(error)
            log.debug("%s: seek to %.2f s failed (%s); decoding on", self.name, t, first_line(error))
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
        return (entries[i].timestamp + self._delay - (self._origin or 0)) * self._tb if i >= 0 else None

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
            except (av.FFmpegError, OSError) as error:  # unreadable data (a truncated file), a stream gone silent
                _reraise_interrupt(error)
                if isinstance(error, av.ExitError):  # the interrupt callback gave up waiting
                    error = TimeoutError(f"nothing came for {NETWORK_TIMEOUT_S:g} s")
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
            self._seek(grid.start_s if self._seeking else 0.0)  # without seeking: from the start
        self._error = None
        frames, clock = self._decode(), StreamClock(self.name, self.fps, self._leaps)
        last = last_key = None
        went_back_from = None  # time we seeked away from, to check the seek moved forward
        reached_end = True  # False when end_s stopped us: then a short file is no news
        while (frame := next(frames, None)) is not None:
            self.frames_decoded += 1
            t = self._time(frame, clock)
            self._seeking = self._seeking and not clock.jumped
            if went_back_from is not None and t < went_back_from:
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
            turns = _quarter_turns(frame.rotation)  # each frame carries the stream's display matrix
            if turns:
                image = np.rot90(image, turns)  # as a player shows it; (W, H, 3) for 90/270 degrees
                self.height, self.width = image.shape[:2]
            yield Frame(np.ascontiguousarray(image), t)
            if self._worth_seeking(t, grid.next_tick) and self._seek(grid.next_tick):
                frames.close()
                frames, clock = self._decode(), StreamClock(self.name, self.fps, self._leaps)
                went_back_from, last_key = t, None
        frames.close()
        if reached_end:
            self._warn_if_cut(last, self._error)

    def close(self) -> None:
        self._container.close()


@functools.cache
def _single_file_options() -> dict[str, str]:
    """FFmpeg options that let a demuxer read the file it is given and nothing else: the file protocol only,
    and every demuxer but `REFERENCE_FORMATS` and those without a file. FFmpeg checks the list after probing
    and before the demuxer reads anything, so a playlist never opens what it names."""
    allowed = []
    for name in sorted(av.formats_available):
        try:
            demuxer = av.ContainerFormat(name, "r")
        except ValueError:  # a muxer only
            continue
        if not demuxer.no_file and REFERENCE_FORMATS.isdisjoint(demuxer.name.split(",")):
            allowed.append(demuxer.name)
    return {"protocol_whitelist": "file", "format_whitelist": ",".join(allowed)}


def _refuse_text(container, source: str) -> None:
    """NotAVideoError when FFmpeg reads `container` with a text-art demuxer (it draws any text file as video)."""
    if TEXT_FORMATS.intersection(container.format.name.split(",")):
        raise NotAVideoError(f"{source} is a text file, not a video (FFmpeg would draw its characters as "
                             "frames); pass a video file")


def _open_error(source: str, scheme: str | None, error: Exception) -> SourceError:
    """The one-line error for a failed `av.open` of a path or URL (`scheme` None for a path)."""
    if isinstance(error, FileNotFoundError):
        return SourceNotFoundError(f"no such file: {source}; check the path")
    if isinstance(error, IsADirectoryError):
        return NotAVideoError(f"{source} is a folder, not a video file; pass a video file")
    if isinstance(error, PermissionError):
        return SourceError(f"cannot read {source}: permission denied; check the file's permissions")
    if scheme and isinstance(error, av.ExitError):  # the interrupt callback gave up waiting
        return SourceNotFoundError(f"no video from {source} within {NETWORK_TIMEOUT_S:g} s (the server did not answer, "
                                   "or what it sends is not a video stream); check the URL and that the server is up")
    if scheme:
        return SourceNotFoundError(
            f"cannot open stream {source} ({first_line(error)}); check the URL and that the server is reachable"
        )
    return NotAVideoError(f"{source} is not a readable video file ({first_line(error)}); check it is a complete video")


class OpenCVSource(VideoSource):
    """A file, URL or webcam read with OpenCV: `grab()` every frame, `retrieve()` only kept ones."""

    backend = "opencv"

    def __init__(self, source: str | int, webcam: bool = False):
        self.name = f"webcam {source}" if webcam else str(source)
        url = URL.match(str(source))
        self.is_live = webcam or bool(url and url.group(1).lower() in _LIVE_SCHEMES)
        previous = cv2.utils.logging.getLogLevel()
        # what OpenCV cannot open is our error to report, in one line (its own go to stderr unless -v shows debug)
        cv2.utils.logging.setLogLevel(previous if log.isEnabledFor(logging.DEBUG) else cv2.utils.logging.LOG_LEVEL_SILENT)
        # a URL gives up after NETWORK_TIMEOUT_S, like PyAV (OpenCV's own default is 30 s)
        ms = round(NETWORK_TIMEOUT_S * 1000)
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms] if url else []
        try:
            self._cap = cv2.VideoCapture(source, cv2.CAP_ANY, timeouts)
        finally:
            cv2.utils.logging.setLogLevel(previous)
        self._held = None  # (monotonic time, BGR image) of the frame a webcam gave at open
        if not self._cap.isOpened():
            if webcam:
                raise WebcamError(
                    f"no webcam at {source}; check that a camera is connected and free, or try another index/device"
                )
            if url:
                raise SourceNotFoundError(
                    f"OpenCV cannot open {source} (no stream there, or no answer within {NETWORK_TIMEOUT_S:g} s); "
                    "check the URL, or use backend='auto'"
                )
            raise RuntimeError(f"OpenCV cannot open {source}")
        if not webcam:
            self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # apply a display rotation, as players do
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
            try:
                duration = _header(str(source))[0]
            except NotAVideoError:
                self._cap.release()
                raise
            self.duration_s = duration or (count / self.fps if count > 0 and self.fps else None)
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
        return True, self._clock.time(self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0), None

    def _read(self, grid: TimeGrid) -> Iterator[Frame]:
        self._reads += 1
        if self._reads > 1 and not self.is_live:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._clock = StreamClock(self.name, self.fps, False)
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


def _header(path: str) -> tuple[float | None, int]:
    """What PyAV reads from a file for the other backends: its length from the headers, for truncation
    warnings (None: unknown), and the display rotation of its first frame in quarter turns (0: none/unknown).
    Raises NotAVideoError for a text file, which the other backends would read as video too."""
    duration = None
    try:
        with av.open(path) as container:
            _refuse_text(container, path)
            if not container.streams.video:
                return None, 0
            stream = container.streams.video[0]
            duration = _duration(container, stream)
            frame = next(container.decode(stream), None)
            return duration, _quarter_turns(frame.rotation) if frame is not None else 0
    except (av.FFmpegError, OSError) as error:
        _reraise_interrupt(error)
        return duration, 0
