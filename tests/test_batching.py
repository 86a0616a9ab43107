"""Sessions' decoding steps batched into one forward (`streamer.kv_batch`, `streamer.batching`): each row
is what its session alone would compute, and sessions answering at once get their solo answers."""

import threading

import pytest
import torch

from conftest import world_chunks
from streamer.batching import Batcher
from streamer.errors import ConfigError
from streamer.kv_batch import batched_pass
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


def sessions(adapter, window, lengths, **kwargs) -> list[StreamSession]:
    """Sessions that saw different amounts of video and one question each."""
    _, chunks = world_chunks(24)
    out = []
    for n in lengths:
        s = StreamSession(adapter, window, skip=None, **kwargs)
        for c in chunks[:n]:
            s.ingest(c)
        s._forward(s._question_prompt("What is on screen?", 8))
        out.append(s)
    return out


@pytest.mark.parametrize("policy,budget", [("full", None), ("combined", 96), ("saddle", 128), ("knorm", 64)])
def test_a_batched_step_is_each_sessions_own_step(adapter, policy, budget):
    """Eight decoding steps of three sessions at different lengths: logits and caches match solo runs."""
    window = WindowConfig(policy=policy, budget=budget)
    solo, batched = sessions(adapter, window, (3, 5, 6)), sessions(adapter, window, (3, 5, 6))
    tokens = [11, 22, 33]
    for _ in range(8):
        alone = torch.stack([s._forward_ids([t]) for s, t in zip(solo, tokens)])
        together = batched_pass(adapter.model, [s.cache for s in batched], torch.tensor([[t] for t in tokens]))
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
        tokens = [int(x.argmax()) for x in alone]
    for a, b in zip(solo, batched):
        assert a.cache.get_seq_length() == b.cache.get_seq_length()
        for la, lb in zip(a.cache.layers, b.cache.layers):
            assert torch.equal(la.position, lb.position)  # the same tokens kept
            torch.testing.assert_close(la.keys, lb.keys, rtol=0, atol=1e-5)


def test_sessions_answering_at_once_get_their_solo_answers():
    """With the trained model (its answers do not hang on float32 rounding, a random model's can)."""
    adapter = load_model("tiny")
    window = WindowConfig(policy="combined", budget=96)
    questions = ["What is on screen?", "Which digit is red?", "Where did the circle go?", "What colour is it?"]
    solo = [s.answer(q, max_new_tokens=8) for s, q in zip(sessions(adapter, window, (2, 3, 4, 5)), questions)]
    batcher = Batcher(adapter.model, gather_s=0.05)
    together = sessions(adapter, window, (2, 3, 4, 5), batcher=batcher)
    answers = [None] * 4
    start = threading.Barrier(4)

    def ask(i):
        start.wait()
        answers[i] = together[i].answer(questions[i], max_new_tokens=8)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert answers == solo
    assert batcher.rows > batcher.batches  # steps did share passes


def test_a_batcher_refuses_bad_settings(adapter):
    with pytest.raises(ConfigError, match="max_batch"):
        Batcher(adapter.model, max_batch=0)
    with pytest.raises(ConfigError, match="gather_s"):
        Batcher(adapter.model, gather_s=-1)


def test_the_worker_ends_when_idle_and_the_next_step_starts_one(adapter, monkeypatch):
    import streamer.batching

    monkeypatch.setattr(streamer.batching, "IDLE_S", 0.05)
    batcher = Batcher(adapter.model)
    s = sessions(adapter, WindowConfig(policy="combined", budget=96), (2,), batcher=batcher)[0]
    first = s.answer("What is on screen?", max_new_tokens=3)
    worker = batcher._worker
    worker.join(10)  # idle: it ends, and lets go of the caches and the model
    assert not worker.is_alive() and batcher._worker is None
    rows = batcher.rows
    assert s.answer("And now?", max_new_tokens=3) and batcher.rows > rows  # a new worker served its steps
    assert first


def test_a_sessions_own_passes_run_on_the_worker_one_at_a_time(adapter):
    """`call` runs a pass on the worker (never two at once); a call made from the worker itself runs at once."""
    batcher = Batcher(adapter.model)
    running, most = [0], [0]

    def work():
        running[0] += 1
        most[0] = max(most[0], running[0])
        threading.Event().wait(0.02)
        running[0] -= 1
        return threading.current_thread().name

    threads = [threading.Thread(target=batcher.call, args=(work,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1
    assert batcher.call(lambda: batcher.call(work)) == "batcher"  # no deadlock from within


def test_standing_questions_of_a_batched_session_are_those_of_a_solo_one(adapter):
    """The standing questions' pass goes through the batcher's worker too; every check's confidence is the
    same as without a batcher."""
    _, chunks = world_chunks(24)
    traces = []
    for batcher in (None, Batcher(adapter.model)):
        s = StreamSession(adapter, WindowConfig(policy="combined", budget=96), skip=None, batcher=batcher)
        s.watch("Is there a red circle on screen?")
        s.watch("Is the digit 7 on screen?")
        trace = []
        for c in chunks:
            s.ingest(c)
            trace.append(dict(s.watcher.last))
        traces.append(trace)
    assert traces[0] == traces[1]
