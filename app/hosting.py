"""The sessions one server replica holds, behind a plain Python API that `streamer-serve` (app/serve.py) puts on
Ray Serve: each replica has one `SessionHost`, and every request of a session reaches the replica whose host
made it.

A session is named by a token `<replica>.<random>`: the replica part says which replica holds it. A host
answers only for its own tokens. A token of another replica (its replica stopped, and the request reached a
survivor or the restarted replica) raises `SessionGone` with `LOST`, never an answer from an empty cache.
The sessions themselves are the web UI's (`SessionRegistry`, `UserSession`): the same slot rules (per-client
cap, idle timeouts), the same uploads checks, feeds and batched answers.

Not here: Ray, HTTP and the page (app/serve.py).
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from streamer.app import limits
from streamer.app.sessions import ServerFullError, SessionRegistry
from streamer.app.state import UiSettings, UserSession
from streamer.errors import StreamerError
from streamer.kv_window import WindowConfig

log = logging.getLogger(__name__)

LOST = ("the server that held this session stopped, and its video and chat went with it; start a new "
        "session and upload the video again")
ENDED = "this session has ended (closed, or unused for too long); start a new session"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}\.[0-9a-f]{32}")


class SessionGone(StreamerError):
    """The session of a token is not here: its replica stopped (`LOST`) or it ended (`ENDED`)."""


def _error(err: StreamerError) -> dict:
    """An error a user causes, as data with its HTTP status: 410 the session is gone, 429 no free slot, 400 the
    rest."""
    status = 410 if isinstance(err, SessionGone) else 429 if isinstance(err, ServerFullError) else 400
    return {"error": str(err), "status": status}


def replica_of(token: str) -> str:
    """The replica part of a session token ("" for a malformed one)."""
    return token.split(".", 1)[0] if _TOKEN.fullmatch(token or "") else ""


class SessionHost:
    """The sessions of one replica, on one loaded model: `open` one, `upload` a video into it, follow its
    `status`, `ask` about it, `close` it. Every call but `open` takes the session's token."""

    def __init__(self, adapter, window: WindowConfig, settings: UiSettings | None = None, replica: str = "local",
                 max_upload_bytes: int = 200 * 2**20):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", replica):
            raise ValueError(f"replica ids are letters, digits, '_' and '-', got {replica!r}")
        self.replica, self.max_upload_bytes = replica, max_upload_bytes
        self.settings = settings or UiSettings()
        self.registry = SessionRegistry(adapter, window, self.settings)
        self.model = adapter.name
        self._uploads = Path(tempfile.mkdtemp(prefix="streamer-serve-"))
        self._files: dict[str, Path] = {}  # token -> its upload on disk (a feed reads it while it plays)
        self._files_lock = threading.Lock()  # uploads run in threads of their own

    def open(self, client: str = "") -> dict:
        """A new session for `client` (its address: one client holds at most its share of the slots): its
        token as "session". Raises ServerFullError when no slot is free."""
        token = f"{self.replica}.{secrets.token_hex(16)}"
        self.registry.get(token, create=True, client=client)
        return {"session": token, "replica": self.replica}

    def upload(self, token: str, data: bytes, name: str) -> dict:
        """Start ingesting the video file `data` (named `name` by the client) into the session, in the
        background: its previous video, cache and chat are forgotten. A file that cannot be read raises
        StreamerError and changes nothing."""
        user = self._user(token)
        if len(data) > self.max_upload_bytes:
            raise StreamerError(f"the upload is {len(data) / 2**20:.1f} MB; this server takes at most "
                                f"{self.max_upload_bytes / 2**20:.0f} MB")
        name = Path(name or "video").name[:200] or "video"
        self._sweep_uploads()
        path = self._uploads / f"{secrets.token_hex(8)}{Path(name).suffix[:16]}"
        try:
            path.write_bytes(data)
        except OSError as err:  # a full disk: the session keeps what it had
            path.unlink(missing_ok=True)
            raise StreamerError(f"the server cannot store {name}: {err.strerror or err}") from None
        try:
            source = limits.open_upload(path, name, self.settings.max_frame_pixels)
        except StreamerError:
            path.unlink(missing_ok=True)
            raise
        try:
            user.start_video(source, name)
        except BaseException:
            source.close()
            path.unlink(missing_ok=True)
            raise
        with self._files_lock:
            old, self._files[token] = self._files.get(token), path
        if old is not None:
            old.unlink(missing_ok=True)  # its feed was stopped: an open file lives on until it is closed
        return self.status(token)

    def status(self, token: str) -> dict:
        """Where the session stands: its video's `state` (none | running | done | stopped | error), frames and
        video time ingested, the cache, and the messages not yet shown (`errors`)."""
        user = self._user(token)
        feed, stats = user.feed, user.stats
        return {"session": token, "replica": self.replica, "state": feed.state if feed else "none",
                "video": feed.label if feed else None, "frames_ingested": stats["frames_ingested"],
                "video_time_s": stats["video_time_s"], "kv_bytes": stats["kv_bytes"],
                "turns": stats["turns"], "errors": user.pop_errors() + ([feed.error] if feed and feed.error else [])}

    def ask(self, token: str, question: str) -> dict:
        """The answer to `question` about the video so far (StreamerError for a bad question or no video)."""
        *_, answer = self.ask_stream(token, question)
        return answer

    def ask_stream(self, token: str, question: str) -> Iterator[dict]:
        """`ask`, piece by piece as the model writes it: {"piece": text} items, then the answer as `ask` gives
        it. A question that is refused raises here, before any item."""
        user = self._user(token)
        return self._answer(user, question, user.ask(question))

    def _answer(self, user: UserSession, question: str, pieces: Iterator[str]) -> Iterator[dict]:
        answer = ""
        for piece in pieces:
            answer += piece
            yield {"piece": piece}
        user.chat.add(question, answer)
        yield {"answer": answer, "video_time_s": user.stats["video_time_s"], "replica": self.replica}

    def close(self, token: str) -> None:
        self._user(token)
        self.registry.drop(token)
        self._sweep_uploads()

    def shutdown(self) -> None:
        for user in self.registry.users():
            self.registry.drop(user.key)
        shutil.rmtree(self._uploads, ignore_errors=True)

    def dispatch(self, method: str, token: str | None, *args) -> dict:
        """Run `method` ("open", "upload", "status", "ask", "close"; with the session's `token` unless "open")
        for the HTTP API: {"ok": result}, or for an error a user causes {"error": message, "status": its HTTP
        status} (`_error`). It crosses processes as data."""
        if method not in ("open", "upload", "status", "ask", "close"):
            raise ValueError(f"no method {method!r}")
        try:
            return {"ok": getattr(self, method)(*args) if token is None else getattr(self, method)(token, *args)}
        except StreamerError as err:
            return _error(err)

    def dispatch_stream(self, token: str, question: str) -> Iterator[dict]:
        """`ask_stream` for the HTTP API: its items, ending with an {"error", "status"} item if it fails."""
        try:
            yield from self.ask_stream(token, question)
        except StreamerError as err:
            yield _error(err)

    def _user(self, token: str) -> UserSession:
        if not isinstance(token, str) or not replica_of(token):
            raise SessionGone("this is not a session token; start a new session")
        if replica_of(token) != self.replica:
            raise SessionGone(LOST)
        user = self.registry.get(token, create=False)
        if user is None:
            raise SessionGone(ENDED)
        return user

    def _sweep_uploads(self) -> None:
        """Delete the uploaded files of sessions that are gone (a feed holds its file open while it reads)."""
        live = {u.key for u in self.registry.users()}
        with self._files_lock:
            gone = [self._files.pop(t) for t in list(self._files) if t not in live]
        for path in gone:
            path.unlink(missing_ok=True)
