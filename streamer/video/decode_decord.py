"""The decord decoder: a video file read with decord, all frame times known at open, kept frames reached by index;
short gaps are stepped over with `next()`, long ones jumped with `skip_frames()` (which seeks to a keyframe).
decord turns 180-degree videos itself; it scrambles 90/270 degrees and joined segments, so it refuses those files."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from streamer.errors import NoFramesError, UnsupportedCodecError
from streamer.video import decode
from streamer.video.frame import Frame, TimeGrid, VideoSource

log = logging.getLogger(__name__)

_DECORD_SKIP_AT = 12  # frames; longer gaps use decord's skip_frames() (fixed cost of a few ms per call)


class DecordSource(VideoSource):
    """A video file read with decord: all frame times known at open, kept frames reached by index."""

    backend = "decord"

    def __init__(self, path: str):
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg logs to stderr; errors reach us as exceptions
        self.name = path
        duration, turns = decode.header(path)
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
