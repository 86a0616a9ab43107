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


@pytest.mark.parametrize("policy", ["full", "combined"])
def test_a_standing_question_sees_only_the_frames_of_its_window(adapter, policy):
    """With `watch_window_s` = 4, a check reads the cached frames of the last 4 s and the text: the older frames'
    keys and values can be anything. With the whole cache (None), they count."""
    _, chunks = world_chunks(24)
    s = StreamSession(adapter, window(policy, budget=160), skip=None)
    for chunk in chunks:
        s.ingest(chunk)
    prompts = [s._question_prompt(q, 8) for q in WATCHES]
    since = s._watch_since()
    assert since == s.last_fed[1] - 4.0

    def check(since):
        return torch.stack(s._side_by_side(prompts, since))

    before, whole = check(since), check(None)
    from streamer.kv_window import KVWindowCache, aside_mask, window_visible

    def masked(cache, layer, keys, values, held, incoming):  # the whole cache under a mask, gathering nothing
        lengths, since = cache.aside
        return keys, values, aside_mask(held, lengths or [incoming], window_visible(layer.times[0, :, :held], since))

    with pytest.MonkeyPatch.context() as m:
        m.setattr(KVWindowCache, "_aside_view", masked)
        torch.testing.assert_close(check(since), before, rtol=1e-4, atol=1e-4)  # the gathered window is that view
    layers = [l for l in s.cache.layers if l.is_initialized]
    old = [(l.times[0, :, :l.get_seq_length()] <= since) for l in layers]  # (H, T): older frame tokens
    assert all(o.any() for o in old) and all((~o & ~l.times[0, :, :o.shape[-1]].isnan()).any() for o, l in zip(old, layers))
    saved = [(l.keys.clone(), l.values.clone()) for l in layers]
    gen = torch.Generator().manual_seed(0)
    for l, o in zip(layers, old):
        for x in (l.keys, l.values):
            x[0, :, :o.shape[-1]][o] = torch.randn(x[0, :, :o.shape[-1]][o].shape, generator=gen) * 3
    torch.testing.assert_close(check(since), before)  # the older frames do not count
    assert not torch.allclose(check(None), whole, atol=1e-3)  # with the whole cache they do
    for l, (k, v) in zip(layers, saved):
        l.keys.copy_(k), l.values.copy_(v)
    recent = [~o & ~l.times[0, :, :o.shape[-1]].isnan() for l, o in zip(layers, old)]  # the window's frames
    for l, r in zip(layers, recent):
        l.values[0, :, :r.shape[-1]][r] = 0.0
    assert not torch.allclose(check(since), before, atol=1e-3)  # the window's frames do


def _watch_delta(adapter, seed: int = 0):
    """Random rank-2 deltas on the text model's q and v projections."""
    from streamer.models.watch_delta import WatchDelta

    gen = torch.Generator().manual_seed(seed)
    factors = {}
    for name, m in adapter.model.named_modules():
        if "text_model" in name and name.endswith(("q_proj", "v_proj")):
            factors[name + ".weight"] = (torch.randn(2, m.in_features, generator=gen) * 0.3,
                                         torch.randn(m.out_features, 2, generator=gen) * 0.3)
    return WatchDelta(adapter.model, factors)


def test_standing_questions_run_with_the_models_watch_weights_and_nothing_else_does(monkeypatch):
    """A model's `watch_delta` (tiny's presence adapter) changes what the standing questions answer, and nothing
    else: the watched session's cache, chat and later answers equal an unwatched one's."""
    adapter = load_model("tiny-random")  # its own: the delta's hooks stay on its layers
    _, chunks = world_chunks(12)
    seen = {}
    real = Watcher.confidence

    def run(delta, watched: bool):
        adapter.watch_delta = delta
        s = StreamSession(adapter, window("combined", budget=96), skip=None)
        if watched:
            s.watch(WATCHES[0])
        for chunk in chunks:
            s.ingest(chunk)
        return s, s.answer("What is on screen?", max_new_tokens=5)

    def recording(self, logits):
        seen.setdefault(id(self), []).append(logits.clone())
        return real(self, logits)

    monkeypatch.setattr(Watcher, "confidence", recording)
    delta = _watch_delta(adapter)
    plain, plain_answer = run(None, watched=False)
    watched, watched_answer = run(delta, watched=True)
    bare, _ = run(None, watched=True)
    assert_same_state(cache_state(plain), cache_state(watched))
    assert watched_answer == plain_answer and plain.conv == watched.conv
    with_delta, without = seen[id(watched.watcher)], seen[id(bare.watcher)]
    assert len(with_delta) == len(without) == len(chunks)
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(with_delta, without))


def test_watch_weights_apply_only_inside_on_and_only_in_its_thread():
    import threading

    adapter = load_model("tiny-random")
    delta = _watch_delta(adapter, seed=1)
    key = next(iter(delta.factors))
    linear = dict(adapter.model.named_modules())[key.removesuffix(".weight")]
    x = torch.randn(3, linear.in_features)
    base = linear(x)
    a, b = delta.factors[key]
    other = {}
    with delta.on():
        torch.testing.assert_close(linear(x), base + x @ a.t() @ b.t())
        thread = threading.Thread(target=lambda: other.update(y=linear(x)))
        thread.start()
        thread.join()
    torch.testing.assert_close(other["y"], base)  # another thread's pass meanwhile: the plain weights
    torch.testing.assert_close(linear(x), base)


def test_a_standing_question_sees_the_opening_but_not_the_chat(adapter):
    """The text before the first frame (the opening) counts for a check; the chat's turns, which its training
    never had, do not: their keys and values can be anything."""
    _, chunks = world_chunks(24)
    s = StreamSession(adapter, WindowConfig(policy="full", budget=None), skip=None)
    for i, chunk in enumerate(chunks):
        s.ingest(chunk)
        if i == 2:
            s.answer("What is on screen?", max_new_tokens=3)
    prompts = [s._question_prompt(q, 8) for q in WATCHES]
    since = s._watch_since()
    before = torch.stack(s._side_by_side(prompts, since))
    layer = s.cache.layers[0]
    text = layer.times[0, 0, :layer.get_seq_length()].isnan()
    first_frame = int((~text).int().argmax())
    chat = text.clone()
    chat[:first_frame] = False  # the text after the first frame: the question and answer of the chat
    assert chat.sum() > 5 and first_frame > 0
    for l in s.cache.layers:
        l.values[0, :, :chat.shape[0]][:, chat] = 5.0
    torch.testing.assert_close(torch.stack(s._side_by_side(prompts, since)), before)  # the chat does not count
    for l in s.cache.layers:
        l.values[0, :, :first_frame] = 5.0
    assert not torch.allclose(torch.stack(s._side_by_side(prompts, since)), before, atol=1e-3)  # the opening does
