"""Who may hold a session slot of the web UI: the user sessions by Gradio `session_hash`, and the rules
that keep slots free for real users.

A slot is cheap to take (any HTTP client can make up a `session_hash` and call an endpoint) and costs a
`StreamSession` with its cache, and only a client that holds Gradio's heartbeat stream open (a browser
tab, `gradio_client`) gets an `unload` when it goes away; a plain HTTP client never does. So the
registry does not wait for `unload`:
- a session that holds no video (nothing ingested and no feed running) is dropped once it has been idle
  for `empty_timeout_s` (60 s); any session once idle for `idle_timeout_s` (30 min). "Idle" means no
  event from its page: an open tab asks for the cache panel every second, so it is never idle;
- when the server is full, a newcomer takes the slot of a session that holds no video, or else of the
  session idle longest, if that one has been idle for `empty_timeout_s` (nobody is watching it);
- one client address holds at most `max_sessions_per_client` sessions (default a quarter of
  `max_sessions`), so one client cannot take every slot.
A page's `unload` (Gradio sends it when the page's heartbeat connection drops: a closed tab, but also a
network that drops for two seconds) does not drop the session at once: it is detached and kept while
events from the page keep coming, and dropped once none came for `reconnect_grace_s` (120 s). Gradio's page
reloads itself when its connection comes back, with a new session_hash; the tab's id (kept in the tab's
sessionStorage, sent on load) finds the detached session again (`attach`), with its video, cache and chat.
A page that comes back after the grace is told that its session ended.
Expired sessions are swept on every registry call (the panel of each open tab makes one a second).

Not here: what a session holds and does (`app/state.py`), the page (`app/ui.py`).
"""

from __future__ import annotations

import logging
import threading
import time

from streamer.app.state import UiSettings, UserSession
from streamer.batching import Batcher
from streamer.errors import StreamerError
from streamer.kv_window import WindowConfig
from streamer.rope import is_mrope
from streamer.session import StreamSession

log = logging.getLogger(__name__)

SESSION_ENDED = ("this page's session has ended (the page was closed, or lost its connection to the server for "
                 "longer than the server waits); reload the page to start again")
CLOSED_MEMORY_S = 600.0  # how long an unloaded page's key is remembered (late events arrive within seconds)
STALE_PAGE_S = 3.0  # a tab's session with no event for this long has no live page (an open page polls every second)


class ServerFullError(StreamerError):
    """No session slot is free for a newcomer (the server, or this client's share of it, is full)."""


class ClosedPageError(StreamerError):
    """An event from a page whose tab was closed (its `unload` came first): it does not get a new session."""


class SessionRegistry:
    """User sessions by Gradio session_hash, all on one model adapter: each session has its own lock and one
    `Batcher` runs the decoding steps of those answering at once together; a model it cannot batch (M-RoPE)
    gets one model lock shared by all sessions instead (they take turns)."""

    def __init__(self, adapter, window: WindowConfig, settings: UiSettings, clock=time.monotonic):
        self.adapter, self.window, self.settings = adapter, window, settings
        self.clock = clock  # monotonic seconds, for every timeout here (tests pass a fake one)
        self.batcher = None if is_mrope(adapter.model.config) else Batcher(adapter.model)
        self.model_lock = None if self.batcher else threading.Lock()  # plain Lock: an answer may resume elsewhere
        self._users: dict[str, UserSession] = {}
        self._closed: dict[str, float] = {}  # key or tab id -> when its session was dropped (not to be revived)
        self._pages: dict[str, str] = {}  # key -> tab id of a page without a session yet (bounded, oldest out)
        self._lock = threading.Lock()

    def get(self, key: str, create: bool = True, client: str = "") -> UserSession | None:
        """The session for `key` (created for `client`, its address, if `create`); marks it active.

        Raises ServerFullError when a new session finds no free slot."""
        with self._lock:
            self._sweep()
            user = self._users.get(key)
            if user is None and create and key in self._closed:
                raise ClosedPageError(SESSION_ENDED)
            if user is None and create:
                self._make_room(client)  # fail fast, before building a session
        if user is None and create:  # built outside the registry lock: it may wait for the model lock
            session = StreamSession(self.adapter, self.window, lock=self.model_lock, skip=self.settings.skip,
                                    batcher=self.batcher)
            with self._lock:
                user = self._users.get(key)
                if user is None:
                    self._make_room(client)  # again: others may have taken the room meanwhile
                    user = self._users[key] = UserSession(key, session, self.settings, client=client,
                                                          page=self._pages.pop(key, None))
                    log.info("session %s created for %s (%d open)", key[:8], client or "?", len(self._users))
        if user is not None:
            user.last_active = self.clock()
        return user

    def share(self, source, label: str) -> UserSession:
        """Start ingesting the server-side `source` (`streamer-ui --stream`) once for every page; the session
        returned owns it, and pages ask on forks of it (`UserSession.ask_shared`). It is no page's slot: never
        swept, never taken. Not batched: its forks' answers run aside of its cache, under its own lock."""
        session = StreamSession(self.adapter, self.window, lock=self.model_lock, skip=self.settings.skip)
        shared = UserSession("shared-stream", session, self.settings)
        shared.start_video(source, label)
        return shared

    def detach(self, key: str) -> None:
        """The page of `key` lost its connection (Gradio's unload): keep its session for `reconnect_grace_s`
        after its last event, so that a page that reconnects finds it; with no grace, drop it now."""
        if not self.settings.reconnect_grace_s:
            return self.drop(key)
        with self._lock:
            user = self._users.get(key)
            if user is not None:
                user.detached, user.last_active = True, self.clock()
        if user is not None:
            log.info("session %s: its page disconnected; kept %g s for it to reconnect", key[:8],
                     self.settings.reconnect_grace_s)

    def attach(self, key: str, page: str) -> UserSession | None:
        """A page of session `key` loaded in the browser tab with id `page`. If a page of that tab lost its
        connection and Gradio reloaded it, the tab's session (detached, or with no event for `STALE_PAGE_S`:
        the server may not have seen the old connection drop yet) becomes `key`'s: returned. Otherwise the
        tab id is remembered for the session this page may make (None)."""
        with self._lock:
            self._sweep()
            now = self.clock()
            user = next((u for u in self._users.values()
                         if u.page == page and (u.detached or now - u.last_active > STALE_PAGE_S)), None)
            if user is None or key in self._users:
                self._pages[key] = page
                while len(self._pages) > 4 * self.settings.max_sessions:  # made-up keys must not grow it
                    del self._pages[next(iter(self._pages))]
                return None
            old = user.key
            self._users[key] = self._users.pop(old)
            user.key, user.detached, user.last_active = key, False, now
        log.info("session %s: its tab reconnected as %s", old[:8], key[:8])
        return user

    def ended(self, key: str) -> bool:
        """True if the session of `key` (or of the tab with this id) was dropped after its page closed or lost
        its connection."""
        with self._lock:
            return key in self._closed

    def drop(self, key: str) -> None:
        """Stop and forget the session of a closed tab (no-op if unknown); events that the tab sent
        before it closed and that arrive later (a webcam frame in flight) do not create it again."""
        with self._lock:
            user = self._users.pop(key, None)
            if user is not None:
                self._remember_closed(user)
        if user is not None:
            user.close()
            log.info("session %s closed (%d open)", key[:8], len(self._users))

    def __len__(self) -> int:
        return len(self._users)

    def users(self) -> list[UserSession]:
        """The open sessions (a snapshot)."""
        with self._lock:
            return list(self._users.values())

    # ---- slot rules (called under self._lock) ---------------------------------------------------

    def _remember_closed(self, user: UserSession) -> None:
        """Late events of its key must not revive a dropped session, and its tab is told it ended (only keys
        that held a session: unloading made-up keys must not grow this)."""
        now = self.clock()
        self._closed = {k: t for k, t in self._closed.items() if now - t < CLOSED_MEMORY_S}
        self._closed[user.key] = now
        if user.page:
            self._closed[user.page] = now

    def _evict(self, user: UserSession, why: str) -> None:
        self._users.pop(user.key).close()
        log.info("session %s dropped: %s, %.0f s idle", user.key[:8], why, self.clock() - user.last_active)

    def _sweep(self) -> None:
        now, s = self.clock(), self.settings
        for user in list(self._users.values()):
            holds_video = user.holds_video()
            if user.detached and now - user.last_active > s.reconnect_grace_s:
                self._evict(user, "its page disconnected and did not come back")
                self._remember_closed(user)
            elif now - user.last_active > (s.idle_timeout_s if holds_video else s.empty_timeout_s):
                self._evict(user, "idle" if holds_video else "idle without a video")

    def _reclaimable(self, users: list[UserSession]) -> UserSession | None:
        """The session among `users` to give up its slot: one without a video, else the one idle
        longest if nobody has used it for `empty_timeout_s`; None if every one is in use."""
        if not users:
            return None
        empty = [u for u in users if not u.holds_video()]
        if empty:
            return min(empty, key=lambda u: u.last_active)
        oldest = min(users, key=lambda u: u.last_active)
        return oldest if self.clock() - oldest.last_active > self.settings.empty_timeout_s else None

    def _make_room(self, client: str) -> None:
        s = self.settings
        own = [u for u in self._users.values() if u.client == client]
        if len(own) >= s.client_cap:
            victim = self._reclaimable(own)
            if victim is None:
                raise ServerFullError(
                    f"this address already holds {len(own)} sessions, the most one client may hold; "
                    "close another tab of this page or try again later"
                )
            self._evict(victim, "its client opened another session")
        if len(self._users) >= s.max_sessions:
            victim = self._reclaimable(list(self._users.values()))
            if victim is None:
                raise ServerFullError(f"the server already holds {s.max_sessions} sessions; try again later")
            self._evict(victim, "the server was full")
