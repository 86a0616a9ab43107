"""The OpenCV decoder: files, URLs and webcams; it `grab()`s every frame and `retrieve()`s only the kept ones, and
applies a display rotation by its own orientation handling."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import cv2
import numpy as np

from streamer.errors import NotAVideoError, SourceNotFoundError, WebcamError
from streamer.video import decode
from streamer.video.frame import Frame, StreamClock, TimeGrid, VideoSource

log = logging.getLogger(__name__)


class OpenCVSource(VideoSource):
    """A file, URL or webcam read with OpenCV: `grab()` every frame, `retrieve()` only kept ones."""

    backend = "opencv"

    def __init__(self, source: str | int, webcam: bool = False):
        self.name = f"webcam {source}" if webcam else str(source)
        url = decode.URL.match(str(source))
        self.is_live = webcam or bool(url and url.group(1).lower() in decode.LIVE_SCHEMES)
        previous = cv2.utils.logging.getLogLevel()
        # what OpenCV cannot open is our error to report, in one line (its own go to stderr unless -v shows debug)
        cv2.utils.logging.setLogLevel(previous if log.isEnabledFor(logging.DEBUG) else cv2.utils.logging.LOG_LEVEL_SILENT)
        # a URL gives up after decode.NETWORK_TIMEOUT_S, like PyAV (OpenCV's own default is 30 s)
        ms = round(decode.NETWORK_TIMEOUT_S * 1000)
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
                    f"OpenCV cannot open {source} (no stream there, or no answer within {decode.NETWORK_TIMEOUT_S:g} s); "
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
                duration = decode.header(str(source))[0]
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
