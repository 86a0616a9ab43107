"""The PyAV decoder: files, URLs and uploads. It seeks to the keyframe before the next tick when that keyframe lies
ahead (demuxer index, or the keyframe spacing seen so far; never in MPEG-TS and live streams), else decodes without
converting; the display rotation is applied per frame. An upload is read as the one file it is
(`single_file_options`)."""

from __future__ import annotations

import logging
import functools
from collections.abc import Iterator

import av
import numpy as np

from streamer.errors import (
    NotAVideoError, NotOneFileError, SourceError, SourceNotFoundError, UnsupportedCodecError, first_line,
)
from streamer.video import decode
from streamer.video.frame import Frame, StreamClock, TimeGrid, VideoSource

log = logging.getLogger(__name__)

_TS_DISCONT = 0x200  # AVFMT_TS_DISCONT: a format whose timestamps may restart mid-file (MPEG-TS, ...)
_MAX_BAD_PACKETS = 50  # consecutive undecodable packets before PyAV gives up on a file


class PyAVSource(VideoSource):
    """A file or network stream read with PyAV (FFmpeg): demux, decode, convert only kept frames."""

    backend = "pyav"

    def __init__(self, source: str, single_file: bool = False):
        """`single_file`: `source` is a local path to read as the one media file it is (an upload): only the
        file protocol, and no demuxer that reads other files (`_single_file_options`)."""
        self.name = source
        match = decode.URL.match(source)
        scheme = match.group(1).lower() if match else None
        options = {"rtsp_transport": "tcp"} if scheme in ("rtsp", "rtsps") else {}
        limits = single_file_options() if single_file else {}
        try:
            self._container = av.open(source, options=options, container_options=limits,
                                      timeout=decode.NETWORK_TIMEOUT_S if scheme else None)
        except (av.FFmpegError, OSError) as error:
            decode.reraise_interrupt(error)
            if single_file and isinstance(error, av.ArgumentError):  # the demuxer FFmpeg chose is not allowed
                raise NotOneFileError(
                    f"{source} is not a single video file (a playlist, an image sequence or a list of files makes "
                    "FFmpeg read other files); upload the video itself, e.g. an .mp4, .webm or .mkv file"
                ) from None
            raise _open_error(source, scheme, error) from error
        try:
            decode.refuse_text(self._container, source)
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
        self.duration_s = decode.stream_duration(self._container, stream)
        self.is_live = scheme in decode.LIVE_SCHEMES or (scheme is not None and self.duration_s is None)  # a file ends
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
            decode.reraise_interrupt(error)
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
                decode.reraise_interrupt(error)
                if isinstance(error, av.ExitError):  # the interrupt callback gave up waiting
                    error = TimeoutError(f"nothing came for {decode.NETWORK_TIMEOUT_S:g} s")
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
            turns = decode.quarter_turns(frame.rotation)  # each frame carries the stream's display matrix
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


def single_file_options() -> dict[str, str]:
    """FFmpeg options that let a demuxer read the file it is given and nothing else: the file protocol only,
    and every demuxer but `decode.REFERENCE_FORMATS` and those without a file. FFmpeg checks the list after probing
    and before the demuxer reads anything, so a playlist never opens what it names."""
    allowed = []
    for name in sorted(av.formats_available):
        try:
            demuxer = av.ContainerFormat(name, "r")
        except ValueError:  # a muxer only
            continue
        if not demuxer.no_file and decode.REFERENCE_FORMATS.isdisjoint(demuxer.name.split(",")):
            allowed.append(demuxer.name)
    return {"protocol_whitelist": "file", "format_whitelist": ",".join(allowed)}


def _open_error(source: str, scheme: str | None, error: Exception) -> SourceError:
    """The one-line error for a failed `av.open` of a path or URL (`scheme` None for a path)."""
    if isinstance(error, FileNotFoundError):
        return SourceNotFoundError(f"no such file: {source}; check the path")
    if isinstance(error, IsADirectoryError):
        return NotAVideoError(f"{source} is a folder, not a video file; pass a video file")
    if isinstance(error, PermissionError):
        return SourceError(f"cannot read {source}: permission denied; check the file's permissions")
    if scheme and isinstance(error, av.ExitError):  # the interrupt callback gave up waiting
        return SourceNotFoundError(f"no video from {source} within {decode.NETWORK_TIMEOUT_S:g} s (the server did not answer, "
                                   "or what it sends is not a video stream); check the URL and that the server is up")
    if scheme:
        return SourceNotFoundError(
            f"cannot open stream {source} ({first_line(error)}); check the URL and that the server is reachable"
        )
    return NotAVideoError(f"{source} is not a readable video file ({first_line(error)}); check it is a complete video")
