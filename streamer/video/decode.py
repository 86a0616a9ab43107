"""What the three decoders share (`decode_pyav.py`, `decode_decord.py`, `decode_opencv.py`, one `VideoSource`
each; `open.py` picks one): what a URL and a live stream are, the network timeout, the FFmpeg demuxers a file may
never be read with, and what PyAV reads from a file's header for the other two.

Each decoder only yields the frames a `TimeGrid` keeps, converting to RGB only those, and skips the others as
cheaply as it can. Times are presentation times in s from the stream's start, kept moving by `StreamClock` where
they jump. Frames come out as a player shows them: a display-matrix rotation (phone videos) is applied. Network
opens and reads give up after `NETWORK_TIMEOUT_S`; Ctrl-C while FFmpeg waits is a KeyboardInterrupt, never a
"bad file" error.
"""

from __future__ import annotations

import errno
import re

import av

from streamer.errors import NotAVideoError

URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")  # a URL's scheme
NETWORK_TIMEOUT_S = 15.0  # a stream that does not open, or sends nothing, for this long is given up
LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "mms"}
# FFmpeg's text-art demuxers draw any text file (a .txt, .nfo, .asc, ...) as frames of characters: refused always
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
# Demuxers that read more than the file they are given: playlists and lists of files (hls, dash, concat, imf),
# image sequences (image2), sibling files (mlv, vobsub), network sessions (sdp) and scripts (avisynth,
# vapoursynth). Refused for a single file (an upload), as are the demuxers that read no file at all (devices,
# lavfi, rtsp, rtp, sap); the CLI reads them where the user named them (docs/sources.md).
REFERENCE_FORMATS = frozenset({"hls", "dash", "concat", "imf", "image2", "mlv", "vobsub", "sdp", "avisynth",
                               "vapoursynth"})


def reraise_interrupt(error: BaseException) -> None:
    """Ctrl-C while FFmpeg waits in a system call comes back as EINTR: make it the KeyboardInterrupt it is."""
    if isinstance(error, InterruptedError) or getattr(error, "errno", None) == errno.EINTR:
        raise KeyboardInterrupt from error


def quarter_turns(degrees: float) -> int:
    """Counter-clockwise quarter turns (as `np.rot90` counts them) for a display rotation in degrees
    counter-clockwise (FFmpeg's display matrix, PyAV's `VideoFrame.rotation`); a phone's portrait is 3."""
    return round(degrees / 90) % 4


def refuse_text(container, source: str) -> None:
    """NotAVideoError when FFmpeg reads `container` with a text-art demuxer (it draws any text file as video)."""
    if TEXT_FORMATS.intersection(container.format.name.split(",")):
        raise NotAVideoError(f"{source} is a text file, not a video (FFmpeg would draw its characters as "
                             "frames); pass a video file")


def stream_duration(container, stream) -> float | None:
    """Length in seconds from the headers (stream first, then container), None if not known."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        start = container.start_time if container.start_time and container.start_time > 0 else 0
        # Some muxers (mkv) store the end time: subtracting the start never overstates the length.
        return max(container.duration - start, 0) / av.time_base or None
    return None


def header(path: str) -> tuple[float | None, int]:
    """What PyAV reads from a file for the other backends: its length from the headers, for truncation
    warnings (None: unknown), and the display rotation of its first frame in quarter turns (0: none/unknown).
    Raises NotAVideoError for a text file, which the other backends would read as video too."""
    duration = None
    try:
        with av.open(path) as container:
            refuse_text(container, path)
            if not container.streams.video:
                return None, 0
            stream = container.streams.video[0]
            duration = stream_duration(container, stream)
            frame = next(container.decode(stream), None)
            return duration, quarter_turns(frame.rotation) if frame is not None else 0
    except (av.FFmpegError, OSError) as error:
        reraise_interrupt(error)
        return duration, 0
