"""Standing questions (`StreamSession.watch`): asked after every chunk and taken back without a trace, causal,
debounced, refused like questions; what an alert carries."""

import pytest
import torch

from conftest import VARIANTS, assert_same_state, cache_state, window, world_chunks
from streamer.errors import BudgetError, ConfigError, QuestionError
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.watch import MAX_WATCHES, Alert, Watcher

WATCHES = ("Is there a red circle on screen?", "Is the digit 7 on screen?")


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


@pytest.mark.parametrize("policy,merge", VARIANTS[:3] + [("combined", "weighted")])
def test_a_watched_session_equals_an_unwatched_one(adapter, policy, merge):
    """Cache, chat and later answers are those of a session without the standing questions, while chunks keep
    coming, questions are asked between them and tokens are evicted and merged."""
    _, chunks = world_chunks(24)
    sessions = [StreamSession(adapter, window(policy, merge, budget=96), skip=None) for _ in range(2)]
    for q in WATCHES:
        sessions[1].watch(q)
    answers = [[], []]
    for i, chunk in enumerate(chunks):
        for s, said in zip(sessions, answers):
            s.ingest(chunk)
            if i in (2, 4):
                said.append(s.answer("What is on screen?", max_new_tokens=5))
        assert_same_state(cache_state(sessions[0]), cache_state(sessions[1]))
        assert sessions[0].conv == sessions[1].conv
    assert answers[0] == answers[1]
    assert [(t.question, t.answer) for t in sessions[0].history] == [(t.question, t.answer) for t in sessions[1].history]
    assert sessions[1].cache.get_seq_length() == sessions[0].cache.get_seq_length()
    assert sessions[1].watcher.last.keys() == set(WATCHES)  # the questions were asked
    assert sessions[1].stats()["watch_seconds"] > 0 and sessions[1].stats()["watches"] == 2


def test_alerts_are_causal(tiny):
    """The alerts (and every check's confidence) of a video cut at T are those of the whole video up to T."""
    _, chunks = world_chunks(40)

    def run(chunks) -> tuple[list[Alert], list[dict]]:
        s = StreamSession(tiny, WindowConfig(policy="combined", budget=160), skip=None)
        for q in WATCHES:
            s.watch(q)
        trace = []
        for c in chunks:
            s.ingest(c)
            trace.append(dict(s.watcher.last))
        return s.alerts, trace

    whole, whole_trace = run(chunks)
    cut, cut_trace = run(chunks[:5])  # 20 s
    assert cut == [a for a in whole if a.video_time_s <= chunks[4].frames[-1].time_s]
    assert cut_trace == whole_trace[:5]


def test_an_alert_fires_once_per_occurrence():
    """Debounce: positive checks in a row are one alert; it fires again only after a negative check."""
    w = Watcher(load_model("tiny-random").tokenizer)
    w.add("Is the digit 7 on screen?")
    fired = [w.update("Is the digit 7 on screen?", c) for c in (0.1, 0.8, 0.9, 0.95, 0.7, 0.2, 0.1, 0.6, 0.9)]
    assert fired == [False, True, False, False, False, False, False, True, False]


def test_an_alert_carries_time_question_answer_and_confidence(adapter, monkeypatch):
    _, chunks = world_chunks(12)
    s = StreamSession(adapter, WindowConfig(budget=256), skip=None)
    s.watch("  Is the digit 7 on screen?  ")
    monkeypatch.setattr(Watcher, "confidence", lambda self, logits: 0.75)  # every check positive
    for c in chunks:
        s.ingest(c)
    (alert,) = s.alerts  # positive all along: one alert, at the first check
    assert alert.question == "Is the digit 7 on screen?" and alert.video_time_s == chunks[0].frames[-1].time_s
    assert alert.confidence == 0.75 and isinstance(alert.answer, str)
    assert alert.to_json() == {"alert": alert.question, "answer": alert.answer,
                               "video_time_s": alert.video_time_s, "confidence": 0.75}
    s.reset()  # a new video: the question stays, its alerts and state go
    assert s.watches == ["Is the digit 7 on screen?"] and s.alerts == []
    s.ingest(chunks[0])
    assert len(s.alerts) == 1


def test_a_standing_question_is_refused_like_a_question(adapter):
    s = StreamSession(adapter, WindowConfig(budget=64))
    with pytest.raises(QuestionError):
        s.watch("   ")
    with pytest.raises(BudgetError):
        s.watch("Is there " + "a very red circle " * 40 + "on screen?")
    with pytest.raises(ConfigError, match="not a standing question"):
        s.unwatch("Is it raining?")
    for i in range(MAX_WATCHES):
        s.watch(f"Is the digit {i} on screen?")
    s.watch("Is the digit 0 on screen?")  # again: still one
    with pytest.raises(ConfigError, match=f"at most {MAX_WATCHES}"):
        s.watch("Is there a red circle on screen?")
    s.unwatch("Is the digit 3 on screen?")
    assert len(s.watches) == MAX_WATCHES - 1 and "Is the digit 3 on screen?" not in s.watches


def test_confidence_is_the_share_of_yes_among_yes_and_no(adapter):
    w = Watcher(adapter.tokenizer)
    logits = torch.full((adapter.model.config.get_text_config().vocab_size,), -1e9)
    logits[w.yes_ids[0]], logits[w.no_ids[0]] = 2.0, 0.0
    assert w.confidence(logits) == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


@pytest.mark.parametrize("policy", ["full", "combined"])
def test_questions_asked_side_by_side_score_as_each_alone(adapter, policy, monkeypatch):
    """One pass for every standing question gives each the confidence it gets when it is the only one."""
    _, chunks = world_chunks(16)
    questions = [*WATCHES, "Is there a blue square on screen?"]
    together = StreamSession(adapter, window(policy, budget=96), skip=None)
    alone = [StreamSession(adapter, window(policy, budget=96), skip=None) for _ in questions]
    for q, s in zip(questions, alone):
        s.watch(q)
        together.watch(q)
    seen = {}  # session -> the first answer token's logits of each check, in order
    real = Watcher.confidence

    def recording(self, logits):
        seen.setdefault(id(self), []).append(logits.clone())
        return real(self, logits)

    monkeypatch.setattr(Watcher, "confidence", recording)
    for chunk in chunks:
        for s in [together, *alone]:
            s.ingest(chunk)
    mixed = seen[id(together.watcher)]
    for i, s in enumerate(alone):
        mine = seen[id(s.watcher)]
        assert len(mine) == len(chunks) and len(mixed) == len(chunks) * len(questions)
        for k, logits in enumerate(mine):
            torch.testing.assert_close(mixed[k * len(questions) + i], logits, rtol=1e-4, atol=1e-4)


def test_a_session_keeps_the_latest_alerts_and_counts_them_all(adapter, monkeypatch):
    """Memory per session is bounded over an endless stream: the latest MAX_ALERTS alerts, and a count."""
    import streamer.watch as watch

    monkeypatch.setattr(watch, "MAX_ALERTS", 3)
    _, chunks = world_chunks(40)
    s = StreamSession(adapter, WindowConfig(budget=128), skip=None)
    s.watch("Is the digit 7 on screen?")
    flip = iter([0.9, 0.1] * len(chunks))
    monkeypatch.setattr(Watcher, "confidence", lambda self, logits: next(flip))  # an alert every other chunk
    for c in chunks:
        s.ingest(c)
    assert len(s.alerts) == 3 and s.alerts_since(0)[1] == 5
    assert [a.video_time_s for a in s.alerts] == [c.frames[-1].time_s for c in chunks[4::2]]
    new, fired = s.alerts_since(4)
    assert new == s.alerts[-1:] and fired == 5
