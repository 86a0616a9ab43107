"""The stages of a stream, overlapped: reading frames, preparing chunks, and the language model.

    reader thread    sample, pace, thin and chunk the source       -> up to 2 chunks wait (live: 1)
    prepare thread   `StreamSession.prepare`: frame skip, pixels,  -> 1 prepared chunk waits
                     the vision tower
    caller's thread  `StreamSession.ingest` of each prepared chunk, the questions at their stops

While the language model takes one chunk, the vision tower encodes the next and the decoder reads the one after.
Items come out in the stream's order, so a question at a stop sees exactly the frames before its time.

A file is never dropped from: a full queue makes the stage before it wait, down to the decoder, and the answers
and the cache are the serial loop's. A live source (webcam, network stream, a file played `--realtime`) cannot
wait, or the lag would grow without end, so for one:
- a chunk that finds the reader's queue full pushes out the oldest waiting chunk (its frames are counted in
  `frames_dropped`, never lost silently), unless the source runs ahead of the wall clock (a burst of buffered
  frames: then the reader waits, as for a file);
- once the model is behind (1 s behind the live edge, or a chunk was dropped), the pipeline samples at the
  highest rate that keeps up, at most the asked one (`rate_fps`), from what the model spends per sampled frame
  (frames the skip held back cost next to nothing, so static footage costs less), measured after each chunk;
  the frames it passes over are counted in `frames_dropped` too. The first time the rate falls
  below the asked one it says so (`Pipeline.ingested` returns the line).
`lag_s` is how far the model runs behind the live edge (`LagMeter`).

An error in a stage (a damaged file, a lost stream) is raised in the caller's thread, as the serial loop would.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from streamer.errors import ConfigError
from streamer.shared_types import PreparedChunk
from streamer.video import frame as video_frame
from streamer.video.frame import Chunk, Frame
from streamer.video.sample import LagMeter, SamplerConfig, chunks_and_stops
from streamer.video.skip import FrameSkipper

HEADROOM = 0.9  # a live stream is sampled at the rate that uses at most this share of the model's time
BEHIND_S = 1.0  # ... once the model is this many seconds behind the live edge (or a waiting chunk was dropped)
_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class _Queue:
    """A bounded queue whose `put` either waits for room or (drop_oldest) pushes out the oldest waiting Chunk."""

    def __init__(self, size: int, stop: threading.Event):
        self.size, self.stop, self.dropped = size, stop, 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()

    def put(self, item, drop_oldest: bool = False) -> None:
        with self._cond:
            while len(self._items) >= self.size and not self.stop.is_set():
                old = next((x for x in self._items if isinstance(x, Chunk)), None) if drop_oldest else None
                if old is not None:
                    self._items.remove(old)
                    self.dropped += len(old.frames)
                    break
                self._cond.wait(0.1)
            self._items.append(item)
            self._cond.notify_all()

    def get(self):
        with self._cond:
            while not self._items:
                if self.stop.is_set():
                    return _END
                self._cond.wait(0.1)  # a short wait: Ctrl-C reaches a caller waiting here
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class Pipeline:
    """Iterate it for the stream's items in order: a `PreparedChunk` to `ingest` (then call `ingested`), or the
    index of a stop. `close()` (or the end of a `with` block) stops the stages."""

    def __init__(self, session, frames: Iterable[Frame], sampler: SamplerConfig, stops: Sequence[float] = (),
                 live: bool = False):
        if not isinstance(sampler, SamplerConfig):
            raise ConfigError(f"a pipeline takes a SamplerConfig, got {type(sampler).__name__}")
        self.session, self.sampler, self.live = session, sampler, live
        self.rate_fps = sampler.fps  # the rate sampled at now (live sources lower it to keep up)
        self.thinned = 0  # frames passed over to keep up
        self.lag = LagMeter(sampler.fps) if live else None
        self._said = False
        self._cost: float | None = None  # model seconds per sampled frame, smoothed
        self._dropped_seen = 0
        self._stop = threading.Event()
        # a live source keeps one chunk waiting: every chunk that waits adds its span to the lag
        self._read_q, self._ready_q = _Queue(1 if live else 2, self._stop), _Queue(1, self._stop)
        # its own frame skip: a stage still running after the session was reset cannot disturb the session's
        skipper = FrameSkipper(session.skipper.cfg) if session.skipper is not None else None
        self._threads = [
            threading.Thread(target=self._read, args=(frames, list(stops)), name="pipeline-read", daemon=True),
            threading.Thread(target=self._prepare, args=(skipper,), name="pipeline-prepare", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def frames_dropped(self) -> int:
        return self.thinned + self._read_q.dropped

    @property
    def lag_s(self) -> float:
        return self.lag.lag_s if self.lag else 0.0

    def live_stats(self) -> dict:
        """What a user and a script see of a live stream: `lag_s`, `frames_dropped` and the rate sampled at."""
        return {"lag_s": round(self.lag_s, 2), "frames_dropped": self.frames_dropped,
                "sampling_fps": round(self.rate_fps, 3)}

    # ---- the stages --------------------------------------------------------------------------------

    def _thin(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        due = -math.inf
        for frame in frames:
            if self._stop.is_set():
                return
            if frame.time_s + 1e-6 < due:
                self.thinned += 1
                continue
            due = frame.time_s + 1.0 / self.rate_fps
            yield frame

    def _read(self, frames: Iterable[Frame], stops: list[float]) -> None:
        start = None  # (wall, video) time of the first frame read
        try:
            for item in chunks_and_stops(self._thin(frames) if self.live else frames, self.sampler, stops):
                if self._stop.is_set():
                    return
                at_edge = False  # a live source that sends faster than real time (a burst) can wait
                if self.live and isinstance(item, Chunk):
                    start = start or (video_frame.WALL.now(), item.frames[0].time_s)
                    at_edge = item.frames[-1].time_s - start[1] <= video_frame.WALL.now() - start[0] + 1.0
                self._read_q.put(item, drop_oldest=at_edge)
        except BaseException as err:  # noqa: BLE001 (raised again in the caller's thread)
            self._read_q.put(_Failed(err))
        finally:
            self._read_q.put(_END)

    def _prepare(self, skipper: FrameSkipper | None) -> None:
        while True:
            item = self._read_q.get()
            if isinstance(item, Chunk):
                try:
                    item = self.session.prepare(item, skipper=skipper)
                except BaseException as err:  # noqa: BLE001
                    item = _Failed(err)
            if self._stop.is_set():
                return
            self._ready_q.put(item)
            if item is _END or isinstance(item, _Failed):
                return

    # ---- the caller's side -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[PreparedChunk | int]:
        while True:
            item = self._ready_q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def ingested(self, prepared: PreparedChunk, work_s: float) -> str | None:
        """Call after each prepared chunk is ingested, with `ingest`'s seconds. For a live source: updates the lag
        and the rate that keeps up; returns a line to show the user (the first time the rate falls, or the lag
        meter's warning while the rate still is the asked one), else None."""
        if not self.live:
            return None
        warning = self.lag.update(prepared.times, work_s)
        cost = work_s / len(prepared.times)
        self._cost = cost if self._cost is None else 0.5 * self._cost + 0.5 * cost
        behind = self.lag.lag_s >= BEHIND_S or self._read_q.dropped > self._dropped_seen
        self._dropped_seen = self._read_q.dropped
        if behind or self.rate_fps < self.sampler.fps:  # once behind, the rate follows what the model costs
            self.rate_fps = min(self.sampler.fps, HEADROOM / max(self._cost, 1e-9))
        if self.rate_fps < self.sampler.fps:
            if self._said:
                return None
            self._said = True
            return (f"the model takes {self._cost:.2f} s per frame, so this live stream is sampled at "
                    f"{self.rate_fps:.2g} fps instead of {self.sampler.fps:g}: frames in between are dropped and "
                    "counted (use a smaller --fps, --speed int8 or a GPU)")
        return warning

    def stop(self) -> None:
        """Ask the stages to stop (they do within 0.1 s, or after the read or the vision pass under way)."""
        self._stop.set()

    def close(self, timeout: float = 20.0) -> None:
        """Stop the stages and wait for them (a reader stuck in a network read waits for its timeout)."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self.session = None  # a finished pipeline keeps no session alive

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
