"""The frame skip (`SkipConfig`; `--skip-static` in the CLI): frames that barely differ from the last frame fed
to the model never reach it (on by default in the session, the CLI and the UI).

Most seconds of a lecture, a room camera or a game screen look like the second before; such a frame costs
a vision-tower pass, tokens, compute and budget for nothing. `FrameSkipper.keep(frame)` compares the frame
with the last frame it let through and says whether to feed it. Real cameras never repeat a frame
exactly, so the comparison is built to ignore what is not a change of content:

- sensor noise and compression artefacts: both frames are averaged down to a small grid (`cells` x
  `cells`, each cell the mean of many pixels) before they are compared;
- brightness flicker and auto-exposure: each signature is divided by its own mean brightness, so a global
  gain cancels;
- small motion (a drifting ball, a blinking cursor) and slow pans: a frame counts as changed only when
  more than `min_area` of its cells moved by more than `level` (relative to the mean brightness); a slow
  pan piles up against the reference until it crosses that, then one frame is fed and becomes the
  reference.

Skipped frames are not sent through the model, but time goes on: the next fed frame carries its own
timestamp, and `max_gap_s` feeds a frame at least that often even if nothing changed (so an object smaller
than `min_area` reaches the model at the latest `max_gap_s` after it appeared, if it stays that long).
Deliberately not here: the sampler (`sample.py`) and the session that calls this (`session.py`); the
cache-side signal for frames that were fed but repeat their predecessor (`WindowConfig.redundancy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamer.errors import check_number
from streamer.video.frame import Frame


@dataclass(frozen=True)
class SkipConfig:
    """When a frame is "the same" as the last one fed."""

    min_area: float = 0.04  # fed when more than this fraction of the grid's cells changed
    level: float = 0.08  # a cell changed when a colour channel moved by this fraction of the mean brightness
    max_gap_s: float = 10.0  # feed a frame at least this often, even when nothing changed
    cells: int = 24  # the signature grid is cells x cells (each cell averages many pixels: noise cancels)

    def __post_init__(self):
        check_number("skip min_area", self.min_area, 0, 1, high_open=True)
        check_number("skip level", self.level, 0, 1, low_open=True, high_open=True)
        check_number("skip max_gap_s", self.max_gap_s, 0, low_open=True)
        check_number("skip cells", self.cells, 4, 256, integer=True)


def signature(image: np.ndarray, cells: int) -> np.ndarray:
    """(cells, cells, 3) float32: the frame averaged down to a grid, divided by its mean brightness."""
    small = cv2.resize(image, (cells, cells), interpolation=cv2.INTER_AREA).astype(np.float32)
    return small / max(float(small.mean()), 1.0)


def changed_area(a: np.ndarray, b: np.ndarray, level: float) -> float:
    """Fraction of grid cells where some channel of two signatures differs by more than `level`."""
    return float((np.abs(a - b).max(axis=-1) > level).mean())


class FrameSkipper:
    """Says which frames to feed (`keep`) and counts the ones it held back (`skipped`)."""

    def __init__(self, cfg: SkipConfig | None = None):
        self.cfg = cfg or SkipConfig()
        self.reset()

    def reset(self) -> None:
        """A new stream: forget the reference frame (the next frame is always fed) and the count."""
        self.skipped = 0
        self._reference: np.ndarray | None = None
        self._reference_s = 0.0

    def keep(self, frame: Frame) -> bool:
        sig = signature(frame.image, self.cfg.cells)
        if (self._reference is None or frame.time_s - self._reference_s >= self.cfg.max_gap_s
                or sig.shape != self._reference.shape
                or changed_area(sig, self._reference, self.cfg.level) > self.cfg.min_area):
            self._reference, self._reference_s = sig, frame.time_s
            return True
        self.skipped += 1
        return False
