"""StreamSession with the tiny random SmolVLM: ingest, multi-turn ask, budget, errors, threads."""

import threading

import numpy as np
import pytest

from streamer.models.registry import load_model
from streamer.errors import BudgetError, QuestionError
from streamer.frames import Chunk
from streamer.video.frame import Frame
from streamer.kv_window import WindowConfig
from streamer.session import StreamSession


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


def chunk(index: int, n: int = 2, fps: float = 1.0) -> Chunk:
    rng = np.random.default_rng(index)
    frames = tuple(
        Frame(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (index * n + i) / fps) for i in range(n)
    )
    return Chunk(frames, index)


def session(adapter, budget=256, policy="combined", **kw) -> StreamSession:
    return StreamSession(adapter, WindowConfig(policy=policy, budget=budget, **kw))


def test_ingest_ask_multi_turn_and_continue(adapter):
    s = session(adapter)
    took = [s.ingest(chunk(i)) for i in range(6)]
    assert all(t > 0 for t in took) and s.ingest_seconds == pytest.approx(sum(took))  # what a LagMeter is fed
    first = s.answer("What is on screen?", max_new_tokens=6)
    text_after_first = s.stats()["kept_by_modality"]["text"]
    for i in range(6, 12):  # frames keep coming after a question
        s.ingest(chunk(i))
    second = s.answer("And now?", max_new_tokens=6)
    st = s.stats()
    assert [t.question for t in s.history] == ["What is on screen?", "And now?"]
    assert [t.answer for t in s.history] == [first, second]
    assert s.history[0].video_time_s == 11.0 and s.history[1].video_time_s == 23.0
    assert st["frames_ingested"] == 24 and st["kv_tokens"] <= 256
    assert st["kept_by_modality"]["text"] >= text_after_first > 0  # the text prior keeps the chat
    assert st["peak_kv_bytes"] <= st["budget_bytes"]
    assert st["rss_bytes"] > 0 and st["ingest_seconds"] > 0 and st["model"] == "tiny-random"


def test_streamed_pieces_join_to_the_answer(adapter):
    s, same = session(adapter), session(adapter)
    for x in (s, same):
        x.ingest(chunk(0))
    pieces = list(s.ask("Describe it.", max_new_tokens=8))
    assert "".join(pieces) == s.history[-1].answer == same.answer("Describe it.", max_new_tokens=8)
    assert len(pieces) > 1 and all(pieces)  # streamed piece by piece, none empty


def test_too_long_question_is_refused_and_session_survives(adapter):
    s = session(adapter, budget=128)
    s.ingest(chunk(0))
    before = s.stats()
    with pytest.raises(BudgetError, match="budget"):
        s.answer("why " * 400)
    after = s.stats()
    assert after["seen_tokens"] == before["seen_tokens"] and after["turns"] == 0
    assert s.answer("ok?", max_new_tokens=4) == s.history[-1].answer
    assert s.stats()["turns"] == 1


def test_empty_question_is_refused(adapter):
    s = session(adapter)
    with pytest.raises(QuestionError, match="empty"):
        s.ask("   ")  # by the call, before any iteration


def test_stopping_an_answer_early_keeps_the_session_usable(adapter):
    s = session(adapter, budget=128)
    s.ingest(chunk(0))
    gen = s.ask("Tell me everything.", max_new_tokens=30)
    next(gen, None)
    gen.close()  # the consumer walked away: the turn is closed, the lock released
    assert s.lock.acquire(timeout=1)
    s.lock.release()
    s.ingest(chunk(1))
    assert s.stats()["kv_tokens"] <= 128


def test_full_policy_refuses_to_pass_model_positions(adapter):
    s = StreamSession(adapter, WindowConfig(policy="full", budget=None))
    limit = s.cache.max_positions
    with pytest.raises(BudgetError, match="positions"):
        for i in range(10_000):
            s.ingest(chunk(i, n=4))
    assert s.cache.next_position() <= limit
    assert s.stats()["evicted"] == 0 and s.stats()["frames_ingested"] > 0
    spent = s.ingest_seconds
    with pytest.raises(BudgetError, match="positions"):
        s.ingest(chunk(10_000, n=4))
    assert s.ingest_seconds == spent  # a refused chunk is no ingest time (the lag meter is not fed it)


def test_reset_forgets_everything(adapter):
    s = session(adapter)
    s.ingest(chunk(0))
    s.answer("hi", max_new_tokens=2)
    s.reset()
    st = s.stats()
    assert st["kv_tokens"] == 0 and st["frames_ingested"] == 0 and st["turns"] == 0 and not s.history


def test_threads_share_a_session_safely(adapter):
    s = session(adapter, budget=128)
    errors = []

    def feed():
        try:
            for i in range(15):
                s.ingest(chunk(i))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    def ask():
        try:
            for _ in range(3):
                s.answer("what now?", max_new_tokens=4)
        except Exception as err:  # pragma: no cover
            errors.append(err)

    threads = [threading.Thread(target=feed), threading.Thread(target=ask)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert s.stats()["frames_ingested"] == 30 and s.stats()["turns"] == 3
    assert max(s.stats()["tokens_per_layer"]) <= 128


def test_sessions_sharing_a_model_keep_separate_state(adapter):
    lock = threading.Lock()
    a = StreamSession(adapter, WindowConfig(budget=256), lock=lock)
    b = StreamSession(adapter, WindowConfig(budget=256), lock=lock)
    a.ingest(chunk(0))
    a.answer("first?", max_new_tokens=2)
    b.ingest(chunk(5))
    assert a.stats()["frames_ingested"] == 2 and b.stats()["frames_ingested"] == 2
    assert a.stats()["video_times"] == [0.0, 1.0] and b.stats()["video_times"] == [10.0, 11.0]
    assert b.stats()["turns"] == 0


def test_proxy_queries_score_each_chunk_and_leave_no_token(adapter):
    """With the `proxy` scorer every chunk is followed by the family's assistant opening as proxy queries: they
    score the cache, none of their tokens stays, and the answers go on as usual."""
    s = session(adapter, budget=64, policy="proxy+pool=9")
    fed = 0
    for i in range(6):
        prompt = adapter.chunk_prompt(chunk(i), s.conv)
        fed += prompt.n_tokens
        s.ingest(chunk(i))
        layer = s.cache.layers[0]
        assert layer.n_seen == fed and layer.probe == 0  # the proxy tokens came and went
        assert layer.get_seq_length() <= 64
        assert layer.acc.any()  # scored by the proxy queries
    assert adapter.proxy_ids() and s.answer("What is on screen?", max_new_tokens=3) is not None
    assert s.stats()["composition"] == "proxy+pool=9"
