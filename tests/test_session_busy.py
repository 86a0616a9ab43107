"""An answer holds its session's lock until it is read to the end. Asking, feeding frames or resetting from
the code that still holds an unfinished answer used to wait for ever (a deadlock, probes A1, A2 and A14 of
issue 42's round); it is now a BusyError at once, while another thread, or a server that runs each step of an
answer in a copy of its context (anyio, so Gradio), still waits its turn as before."""

from __future__ import annotations

import contextvars
import threading

import numpy as np
import pytest

from streamer.errors import BusyError
from streamer.frames import Chunk
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.video.frame import Frame

pytestmark = pytest.mark.timeout(120)


def chunk(t: float) -> Chunk:
    return Chunk((Frame(np.full((32, 32, 3), int(t * 40) % 255, np.uint8), t),))


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.fixture
def session(adapter):
    s = StreamSession(adapter, WindowConfig(policy="combined", budget=256), skip=None)
    s.ingest(chunk(0.0))
    return s


@pytest.mark.parametrize("call", [
    lambda s: s.ask("and now?"), lambda s: s.ingest(chunk(1.0)), lambda s: s.reset(), lambda s: s.answer("again?"),
], ids=["ask", "ingest", "reset", "answer"])
def test_using_a_session_while_reading_its_answer_is_busy_not_a_deadlock(session, call):
    pieces = session.ask("what is on screen?", max_new_tokens=4)
    next(pieces)
    with pytest.raises(BusyError, match="still being read"):
        call(session)
    rest = list(pieces)  # the answer goes on, and once it is over the session takes calls again
    assert session.history[-1].answer.endswith("".join(rest))
    session.ingest(chunk(2.0))
    assert session.answer("and now?", max_new_tokens=2) is not None and len(session.history) == 2


def test_a_closed_answer_frees_the_session(session):
    pieces = session.ask("what is on screen?", max_new_tokens=4)
    next(pieces)
    pieces.close()
    session.ingest(chunk(1.0))
    assert session.frames_ingested == 2


def test_another_thread_waits_for_the_answer_instead(session):
    pieces = session.ask("what is on screen?", max_new_tokens=4)
    next(pieces)
    done = threading.Event()
    threading.Thread(target=lambda: (session.ingest(chunk(1.0)), done.set()), daemon=True).start()
    assert not done.wait(0.5)  # it waits for the lock, as before
    list(pieces)
    assert done.wait(60) and session.frames_ingested == 2


def test_steps_run_in_copied_contexts_leave_no_mark(session):
    """Gradio runs each next() of an answer in a copy of the request's context (anyio.to_thread.run_sync): the
    worker's own context, which goes on to serve other requests, must not count as reading it (they wait)."""
    from streamer.session import _check_not_reading

    pieces = session.ask("what is on screen?", max_new_tokens=3)
    assert contextvars.copy_context().run(next, pieces) is not None
    _check_not_reading(session.lock)  # no BusyError here: this context did not run the answer
    list(pieces)
    with pytest.raises(BusyError):  # while the same answer, stepped in this context, is a BusyError
        pieces = session.ask("and now?", max_new_tokens=3)
        next(pieces)
        _check_not_reading(session.lock)
    list(pieces)
