"""One stream, many viewers (`StreamSession.fork`): a viewer's questions leave the stream's cache and chat as
they were, viewers never see each other's turns, and a viewer's follow-up reads like one in a single chat."""

import threading

import pytest

from conftest import VARIANTS, assert_same_state, cache_state, window, world_chunks
from streamer.errors import BudgetError, QuestionError
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.mark.parametrize("policy,merge", VARIANTS[:3] + [("combined", "weighted")])
def test_a_viewer_leaves_the_stream_as_it_was(adapter, policy, merge):
    """Cache, chat and the stream's own answers equal those of a stream nobody forked, while chunks keep coming
    and viewers ask (with earlier turns recalled) between them."""
    _, chunks = world_chunks(24)
    streams = [StreamSession(adapter, window(policy, merge, budget=96), skip=None) for _ in range(2)]
    viewers = [streams[1].fork(), streams[1].fork()]
    said = [[], []]
    for i, chunk in enumerate(chunks):
        for s in streams:
            s.ingest(chunk)
        for v in viewers:
            v.answer(f"What is on screen now, {i}?", max_new_tokens=4)
        if i in (2, 4):
            for s, out in zip(streams, said):
                out.append(s.answer("What is on screen?", max_new_tokens=5))
        assert_same_state(cache_state(streams[0]), cache_state(streams[1]))
        assert streams[0].conv == streams[1].conv
    assert said[0] == said[1]
    assert [t.question for t in streams[1].history] == ["What is on screen?"] * 2  # no viewer's question
    assert all(len(v.history) == len(chunks) for v in viewers)


def test_viewers_do_not_see_each_others_turns(adapter):
    """A viewer's answers are the same whether or not another viewer asked before it."""
    _, chunks = world_chunks(12)
    stream = StreamSession(adapter, WindowConfig(policy="combined", budget=128), skip=None)
    for c in chunks:
        stream.ingest(c)
    alone = stream.fork()
    first = [alone.answer(q, max_new_tokens=6) for q in ("What is red?", "Where is it?")]
    a, b = stream.fork(), stream.fork()
    a.answer("Describe everything you saw, please.", max_new_tokens=6)
    second = [b.answer(q, max_new_tokens=6) for q in ("What is red?", "Where is it?")]
    assert second == first
    assert [t.question for t in a.history] == ["Describe everything you saw, please."]
    assert [t.question for t in b.history] == ["What is red?", "Where is it?"]


def test_a_follow_up_reads_like_one_in_a_single_chat(adapter):
    """With the full cache, a viewer's second answer (its first turn recalled aside) is the answer a plain
    session gives to the same two questions in a row."""
    _, chunks = world_chunks(12)
    stream, plain = (StreamSession(adapter, WindowConfig(policy="full", budget=None), skip=None) for _ in range(2))
    for c in chunks:
        stream.ingest(c)
        plain.ingest(c)
    viewer = stream.fork()
    questions = ("What is on screen?", "And what colour is it?")
    assert [viewer.answer(q, max_new_tokens=6) for q in questions] == [plain.answer(q, max_new_tokens=6)
                                                                      for q in questions]
    assert stream.history == [] and stream.cache.get_seq_length() < plain.cache.get_seq_length()


def test_a_viewer_is_refused_like_the_stream_and_keeps_its_chat(adapter):
    stream = StreamSession(adapter, WindowConfig(policy="combined", budget=96), skip=None)
    for c in world_chunks(12)[1]:
        stream.ingest(c)
    viewer = stream.fork()
    viewer.answer("What is on screen?", max_new_tokens=3)
    with pytest.raises(QuestionError):
        viewer.answer("   ")
    with pytest.raises(BudgetError):
        viewer.answer("why " * 200)
    assert [t.question for t in viewer.history] == ["What is on screen?"]
    viewer.answer("And now?", max_new_tokens=3)  # the refusals left nothing behind
    assert [t.question for t in viewer.history] == ["What is on screen?", "And now?"] and stream.history == []


def test_viewers_asking_from_threads_while_the_stream_ingests(adapter):
    """Eight viewers in eight threads while frames keep coming: every answer arrives, the stream's cache stays
    within its budget and the stream's chat holds no viewer's question."""
    _, chunks = world_chunks(24)
    stream = StreamSession(adapter, WindowConfig(policy="combined", budget=96), skip=None)
    stream.ingest(chunks[0])
    viewers = [stream.fork() for _ in range(8)]
    errors = []

    def ask(v):
        try:
            for i in range(3):
                v.answer(f"Question {i}: what is on screen?", max_new_tokens=3)
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=ask, args=(v,)) for v in viewers]
    for t in threads:
        t.start()
    for c in chunks[1:]:
        stream.ingest(c)
    for t in threads:
        t.join(60)
    assert not errors and all(len(v.history) == 3 for v in viewers)
    assert stream.history == [] and stream.cache.get_seq_length() <= 96
