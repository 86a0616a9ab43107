"""Per-browser-session state of the web UI: one `StreamSession`, its chat, its feed thread, its history.

What it holds:
- `UiSettings`: sampling and limits of the web UI (validated dataclass);
- `History`: a bounded record of (video time, KV bytes, RSS) samples for the memory plot; when full it
  drops every other sample, so an hour-long stream still spans the whole plot in a fixed amount of memory;
- `Feed`: a background thread that feeds one source (an uploaded file, or a `PushSource` filled by
  the browser's webcam) into the session, chunk by chunk, until the source ends or it is stopped;
- `UserSession`: everything one browser tab owns (session, chat messages, feed, stats snapshot); the alerts
  of its standing questions (`StreamSession.watch`) go into its chat as the feed ingests them.

Threads and locks. Every model call (ingest, answer, reset, stats) runs under the session's lock (its
own; the passes of all users go one at a time through the registry's `Batcher`, or, for a model it cannot
batch, the lock is one model lock shared by all). A user's `guard` orders "check the feed is still
current, then ingest" against "stop the feed, then reset": a stopped feed never writes into a cache
that was reset for the next source. Order is always guard -> session lock. The stats shown in the page
are a snapshot taken under the session lock after each chunk and each answer, so the 1 s refresh never
waits for the model.

Not here: the sessions by Gradio `session_hash` and who may hold one (`app/sessions.py`), the layout and
event wiring (`app/ui.py`), figures and HTML (`app/plots.py`), reading video (`streamer/frames.py`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from streamer.app.chat import Chat
from streamer.app.limits import MAX_FRAME_PIXELS
from streamer.app.plots import alert_text
from streamer.errors import ConfigError, StreamerError, check_number
from streamer.video.skip import SkipConfig
from streamer.frames import SamplerConfig, sample_frames
from streamer.pipeline import Pipeline
from streamer.shared_types import PreparedChunk
from streamer.video import frame as video_frame
from streamer.video.frame import PushSource, VideoSource
from streamer.kv_window import WindowConfig
from streamer.session import StreamSession
from streamer.viewers import Viewer

log = logging.getLogger(__name__)

WEBCAM_RESTART_GAP_S = 2.0  # webcam frames after a pause this long mean the user (re)started the webcam
NO_VIDEO = "there is no video to ask about yet: load a video or start the webcam first"


@dataclass
class UiSettings:
    """How the web UI samples video and which limits it enforces. Bad values raise ConfigError naming the field."""

    fps: float = 1.0  # frames per second of video kept (uploads and webcam alike)
    chunk_frames: int = 4  # frames per forward pass for an uploaded video
    webcam_chunk_frames: int = 1  # frames per forward pass for the webcam (small: low latency)
    max_side: int = 384  # frames are shrunk so the longer side is at most this many pixels
    realtime: bool = False  # feed uploads at video speed (rehearse a live stream) instead of flat out
    max_new_tokens: int = 64  # longest answer, in tokens
    history_points: int = 512  # most (video time, KV bytes, RSS) samples kept per session for the plot
    max_sessions: int = 16  # sessions held at once; when none can be reclaimed a newcomer gets a message
    max_sessions_per_client: int | None = None  # sessions one client address may hold; None: max_sessions // 4
    idle_timeout_s: float = 1800.0  # a session with a video, unused this long, is dropped (its cache freed)
    empty_timeout_s: float = 60.0  # a session without a video, unused this long, is dropped; so is any
    # session unused this long when the server is full and a newcomer needs its slot (an open page polls
    # every second, so only a closed tab or a departed API client goes unused this long)
    skip: SkipConfig | None = SkipConfig()  # frames that barely differ from the last one fed are not fed; None: feed all
    max_frame_pixels: int = MAX_FRAME_PIXELS  # a webcam frame or an upload declaring more is refused (app/limits.py)
    chat_window: int = 20  # turns the page shows (and each answer sends); "Show the whole chat" has all
    max_chat_chars: int = 200_000  # characters of chat a session keeps; the oldest turns go first (app/chat.py)
    reconnect_grace_s: float = 120.0  # a page whose connection dropped keeps its session this long unheard of

    def __post_init__(self):
        check_number("fps", self.fps, 0, low_open=True)
        for name in ("chunk_frames", "webcam_chunk_frames", "max_side", "max_new_tokens", "max_sessions",
                     "max_frame_pixels", "chat_window", "max_chat_chars"):
            check_number(name, getattr(self, name), 1, integer=True)
        check_number("history_points", self.history_points, 4, integer=True)
        check_number("max_sessions_per_client", self.max_sessions_per_client, 1, self.max_sessions, integer=True,
                     none_ok=True)
        for name in ("idle_timeout_s", "empty_timeout_s"):
            check_number(name, getattr(self, name), 0, low_open=True)
        check_number("reconnect_grace_s", self.reconnect_grace_s, 0)
        if not isinstance(self.realtime, bool):
            raise ConfigError(f"realtime must be True or False, got {self.realtime!r}")
        if not isinstance(self.skip, SkipConfig | None):
            raise ConfigError(f"skip must be a SkipConfig or None, got {type(self.skip).__name__}")

    @property
    def client_cap(self) -> int:
        """Sessions one client address may hold."""
        return self.max_sessions_per_client or max(1, self.max_sessions // 4)

    def sampler(self, webcam: bool = False) -> SamplerConfig:
        return SamplerConfig(
            fps=self.fps, max_side=self.max_side, realtime=self.realtime and not webcam,
            chunk_frames=self.webcam_chunk_frames if webcam else self.chunk_frames,
        )  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One point of the memory plot."""

    video_time_s: float
    kv_bytes: int
    rss_bytes: int


class History:
    """At most `capacity` samples spread over the whole stream (thread-safe).

    Samples are accepted every `stride`-th call; when the buffer is full every other sample is dropped
    and the stride doubles, so the kept samples stay evenly spread from the first to the latest.
    """

    def __init__(self, capacity: int = 512):
        if capacity < 4:
            raise ValueError(f"capacity must be >= 4, got {capacity!r}")
        self.capacity = capacity
        self._samples: list[Sample] = []
        self._stride = 1
        self._calls = 0
        self._lock = threading.Lock()
        self.version = 0  # bumps on every change; lets the UI skip redrawing an unchanged plot

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._calls += 1
            if (self._calls - 1) % self._stride:
                return
            if len(self._samples) >= self.capacity:
                self._samples = self._samples[::2]
                self._stride *= 2
            self._samples.append(sample)
            self.version += 1

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def clear(self) -> None:
        with self._lock:
            self._samples, self._stride, self._calls = [], 1, 0
            self.version += 1

    def __len__(self) -> int:
        return len(self._samples)


class Feed:
    """A thread that feeds one source into a user's session until it ends or `stop()` is called."""

    def __init__(self, user: UserSession, source: VideoSource, sampler: SamplerConfig, kind: str, label: str):
        # weak: the session owns its feed, and a dropped session (its cache, its decoder) must be freed at
        # once by reference counting, not at the next cyclic garbage collection
        self._user = weakref.ref(user)
        self.key, self.source, self.sampler = user.key, source, sampler
        self.kind = kind  # "video" or "webcam"
        self.label = label  # file name or "webcam", for the status line
        self.duration_s = source.duration_s  # None for the webcam
        self.expected_frames = (
            max(1, math.ceil(self.duration_s * sampler.fps - 1e-6)) if self.duration_s else None
        )
        self.state = "running"  # running | done | stopped | error
        self.frames = 0  # frames this feed has put into the session
        # reading, the vision tower and the language model overlap; on a webcam frames are dropped (counted) to
        # keep up, and `pipeline.lag_s` is how far the model runs behind (`streamer.pipeline`)
        self.pipeline: Pipeline | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed-{self.key[:8]}-{kind}", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the thread to stop; it ingests nothing after this returns (see UserSession.guard)."""
        self._stop.set()
        if self.state == "running":
            self.state = "stopped"
        if self.pipeline is not None:
            self.pipeline.stop()
        if isinstance(self.source, PushSource):
            self.source.close()  # wakes the thread waiting for a webcam frame

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            user = self._user()
            if user is None:
                return
            self.pipeline = Pipeline(user.session, sample_frames(self.source, self.sampler), self.sampler,
                                     live=self.source.is_live)
            del user  # the thread never keeps a dropped session alive
            with self.pipeline:
                ended = all(self._ingest(prepared) for prepared in self.pipeline)  # False: stopped
            if ended:
                if not self.stopped:
                    self.state = "done"
                    if self.source.cut:  # a truncated file: say so, not only in the server's log
                        self._report(f"{self.label} is cut short: {self.source.cut}")
        except StreamerError as err:
            self._fail(str(err))
        except Exception as err:  # a bug: log it fully, show one line, keep the app alive
            log.exception("feed %s of session %s crashed", self.label, self.key[:8])
            self._fail(f"internal error while reading {self.label}: {type(err).__name__}: {err}")
        finally:
            self.source.close()

    def _ingest(self, prepared: PreparedChunk) -> bool:
        user = self._user()  # a local only for this call: the thread never keeps a dropped session alive
        return user is not None and user.ingest_from(self, prepared)

    def _fail(self, message: str) -> None:
        if self.stopped:
            return
        self.state = "error"
        self._report(message)

    def _report(self, message: str) -> None:
        """Show `message` in the page, naming the source by its label: an upload's path on the server (its
        temporary folder) is none of the user's business."""
        message = message.replace(self.source.name, self.label) if self.source.name else message
        if self.state == "error":
            self.error = message
        user = self._user()
        if user is not None:
            user.report_error(message)


@dataclass
class UserSession:
    """Everything one browser session owns. Create through `SessionRegistry`."""

    key: str  # Gradio session_hash
    session: StreamSession
    settings: UiSettings
    client: str = ""  # the address of the client that opened it (per-client session cap)
    chat: Chat = field(default_factory=Chat)  # Gradio messages: {"role": ..., "content": ...}, bounded
    feed: Feed | None = None
    stats: dict = field(default_factory=dict)  # snapshot of session.stats(), refreshed after model work
    history: History = field(default_factory=History)
    last_active: float = field(default_factory=time.monotonic)
    detached: bool = False  # its page's connection dropped (Gradio's unload): kept while events still come
    page: str | None = None  # the id its browser tab keeps over reloads, to find it again after one (registry.attach)
    guard: threading.Lock = field(default_factory=threading.Lock)
    plot_version: tuple | None = None  # (History.version, alert_serial) of the plot last sent to the page
    answering: threading.Lock = field(default_factory=threading.Lock)  # held while an answer is written
    alert_serial: int = 0  # alerts put into the chat, over every video of the session (only grows)
    alerts_sent: int = 0  # alert_serial of the chat last sent to the page by the refresh (app/watches.py)
    alert_box: tuple | None = None  # (alert_serial, alerts of this video) of the alert box last sent to the page
    viewer: Viewer | None = None  # this session's fork of the server's shared stream, once it asked about it
    shared_chat: Chat = field(default_factory=Chat)  # its turns about the shared stream
    _alerts_taken: int = 0  # alerts of the current video (session.alerts) already in the chat
    _chat_writers: int = 0  # requests writing the chat into the page now (an answer): the refresh leaves it be
    _writers_lock: threading.Lock = field(default_factory=threading.Lock)
    _errors: list[str] = field(default_factory=list)  # not yet shown as a toast
    _next_push: float = 0.0  # wall time (streamer.video.frame.WALL) the next webcam frame is due
    _push_t0: float = 0.0  # wall time of the webcam feed's video time 0
    _cam_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_cam_frame: float = -math.inf  # wall time the browser last sent a webcam frame

    def __post_init__(self):
        self.history = History(self.settings.history_points)
        self.chat = Chat(self.settings.max_chat_chars)
        self.shared_chat = Chat(self.settings.max_chat_chars)
        self.stats = self.session.stats()  # nobody else uses a new session: no lock needed

    # ---- sources --------------------------------------------------------------------------------

    def start_video(self, source: VideoSource, label: str, window: WindowConfig | None = None) -> Feed:
        """Forget the previous source and chat, then ingest `source` (already opened) in the background, under
        the cache settings `window` (None: as before; a bad one raises ConfigError and changes nothing)."""
        return self._start(source, "video", label, window)

    def push_webcam(self, image: np.ndarray, window: WindowConfig | None = None) -> str:
        """Queue a webcam frame if one is due at the target fps; starts a webcam feed when needed.

        Returns "started" (a new webcam feed began: cache and chat were reset), "queued", or "skipped"
        (not due yet, or a video is playing: while the browser keeps streaming its webcam after a video
        was uploaded the frames are ignored; a stream (re)started after a pause takes over again).
        """
        with self._cam_lock:  # frames of one browser may be handled concurrently
            return self._push_webcam(image, window)

    def _push_webcam(self, image: np.ndarray, window: WindowConfig | None) -> str:
        now = video_frame.WALL.now()
        resumed = now - self._last_cam_frame > WEBCAM_RESTART_GAP_S
        self._last_cam_frame = now
        feed, result = self.feed, "queued"
        if feed is None or feed.stopped or (feed.kind == "video" and resumed):
            self._start(PushSource(max_pending=8, name="webcam"), "webcam", "webcam", window)
            self._push_t0, self._next_push = now, now
            feed, result = self.feed, "started"
        if feed.kind != "webcam" or feed.state != "running" or now < self._next_push:
            return "skipped"  # a failed feed waits for "clear"; otherwise not due yet
        # next tick of the same grid the sampler keeps (t0 + k / fps), so every pushed frame is kept
        t = now - self._push_t0
        fps = self.settings.fps
        self._next_push = self._push_t0 + (math.floor(t * fps + 1e-6) + 1) / fps
        feed.source.push(image, time_s=t)
        return result

    def webcam_active(self) -> bool:
        """True while the browser is streaming webcam frames (one arrived within the restart gap)."""
        return video_frame.WALL.now() - self._last_cam_frame <= WEBCAM_RESTART_GAP_S

    def stop_feed(self) -> None:
        with self.guard:
            if self.feed is not None:
                self.feed.stop()

    def _start(self, source: VideoSource, kind: str, label: str, window: WindowConfig | None = None) -> Feed:
        with self.guard:
            if window is not None:  # before the old feed stops: a window the model cannot take changes nothing
                self.session.check_window(window)
            if self.feed is not None:
                self.feed.stop()
            self.session.reset(window)  # keeps the standing questions, forgets their alerts
            self._alerts_taken = 0
            self.chat = Chat(self.settings.max_chat_chars)
            self.history.clear()
            self.refresh_stats()
            self.feed = Feed(self, source, self.settings.sampler(webcam=kind == "webcam"), kind, label)
        log.info("session %s: %s feed started (%s)", self.key[:8], kind, label)
        return self.feed

    def ingest_from(self, feed: Feed, prepared: PreparedChunk) -> bool:
        """Called by a feed thread: ingest `prepared` unless the feed was stopped. False = stop feeding."""
        with self.guard:
            if feed.stopped or feed is not self.feed:
                return False
            work_s = self.session.ingest(prepared)
            feed.frames += len(prepared.times)
            warning = feed.pipeline.ingested(prepared, work_s)
            self._take_alerts()
            self.refresh_stats()
        if warning:
            self.report_error(warning[0].upper() + warning[1:] + ".")
        time.sleep(0)  # let a waiting question take the session lock between chunks
        return True

    def _take_alerts(self) -> None:
        """Put the alerts the last chunk fired into the chat, each once (called under `guard`)."""
        alerts, fired = self.session.alerts_since(self._alerts_taken)
        for alert in alerts:
            self.chat.note(alert_text(alert))
        self.alert_serial += fired - self._alerts_taken
        self._alerts_taken = fired

    # ---- chat -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing_chat(self):
        """Held by a request that streams the chat into the page (an answer): the 1 s refresh sends no chat
        meanwhile, so an older chat it took cannot land over the answer."""
        with self._writers_lock:
            self._chat_writers += 1
        try:
            yield
        finally:
            with self._writers_lock:
                self._chat_writers -= 1

    @property
    def chat_busy(self) -> bool:
        return self._chat_writers > 0

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer's text pieces; raises StreamerError (before any piece) for a bad question,
        or when the cache holds no frame yet (there would be nothing to answer about)."""
        if not self.stats.get("frames_ingested"):
            if self.feed is not None and self.feed.state == "running":
                raise StreamerError(f"the first frames of {self.feed.label} are still being read; ask again "
                                    "in a moment")
            raise StreamerError(NO_VIDEO)
        return self._answer(lambda: self.session.ask(question, self.settings.max_new_tokens))

    def ask_shared(self, stream: UserSession, question: str) -> Iterator[str]:
        """`ask` about the server's shared stream (`stream`, `SessionRegistry.share`) on this session's own fork of it
        (a `Viewer`): its turns are this session's alone, and nothing it asks changes the stream's cache."""
        if not stream.stats.get("frames_ingested"):
            raise StreamerError("the shared stream has no frame yet; ask again in a moment")
        if self.viewer is None or self.viewer.stream is not stream.session:
            self.viewer = stream.session.fork()
        viewer = self.viewer
        return self._answer(lambda: viewer.ask(question, self.settings.max_new_tokens))

    def _answer(self, pieces_of) -> Iterator[str]:
        """Stream the pieces of `pieces_of()` (an answer), one answer at a time per session. The answer is
        written by a worker thread that always runs to the end, so the model and session locks are released
        even when the browser goes away mid-answer."""
        if not self.answering.acquire(blocking=False):
            raise StreamerError("the previous answer is still being written; wait for it to finish")
        pieces: queue.Queue = queue.Queue()

        def work():
            end = ("done", None)
            try:
                for piece in pieces_of():
                    pieces.put(("piece", piece))
            except StreamerError as err:
                end = ("error", err)
            except Exception as err:
                log.exception("answer failed in session %s", self.key[:8])
                end = ("error", StreamerError(f"internal error while answering: {type(err).__name__}: {err}"))
            finally:
                try:  # the stats and the answer slot first, so whoever hears the end sees this turn counted
                    self.refresh_stats()
                finally:
                    self.answering.release()
                    pieces.put(end)

        threading.Thread(target=work, name=f"answer-{self.key[:8]}", daemon=True).start()
        return _drain(pieces)

    def clear(self) -> None:
        """Forget the chat and the cache; a running feed goes on into the empty cache, a failed one is dropped."""
        with self.guard:
            if self.feed is not None and self.feed.state == "error":
                self.feed = None
            self.session.reset()
            self._alerts_taken = 0
            self.chat = Chat(self.settings.max_chat_chars)
            self.history.clear()
            self.refresh_stats()

    # ---- status ---------------------------------------------------------------------------------

    def clear_shared(self) -> None:
        """Forget this session's turns about the shared stream (a new fork next time)."""
        self.viewer, self.shared_chat = None, Chat(self.settings.max_chat_chars)

    def holds_video(self) -> bool:
        """True while a feed runs or the cache holds frames (a session without a video has nothing to lose)."""
        feed = self.feed
        return bool(self.stats.get("frames_ingested")) or (feed is not None and feed.state == "running")

    def refresh_stats(self) -> None:
        """Snapshot the session's stats (under the session lock) and add a point to the history."""
        with self.session.lock:
            stats = self.session.stats()
        pipeline = self.feed.pipeline if self.feed is not None else None
        if pipeline is not None and pipeline.live:  # lag_s, frames_dropped: how the model keeps up with a webcam
            stats.update(pipeline.live_stats())
        self.stats = stats
        if stats["frames_ingested"]:
            self.history.add(Sample(stats["video_time_s"], stats["kv_bytes"], stats["rss_bytes"]))

    def report_error(self, message: str) -> None:
        self._errors.append(message)

    def pop_errors(self) -> list[str]:
        errors, self._errors = self._errors, []
        return errors

    def close(self) -> None:
        if self.feed is not None:
            self.feed.stop()


def _drain(pieces: queue.Queue) -> Iterator[str]:
    """The pieces an answer's worker puts into `pieces`, until its end (an error is raised)."""
    while True:
        kind, value = pieces.get()
        if kind == "piece":
            yield value
        elif kind == "error":
            raise value
        else:
            return
