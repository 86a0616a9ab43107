"""Training examples for `tiny` are exactly what a StreamSession feeds at inference, chats included."""

from __future__ import annotations

import pytest

from streamer.models.registry import load_model
from streamer.frames import Chunk
from streamer.kv_window import WindowConfig
from streamer.session import StreamSession
from streamer.world.scene import frame_questions, random_script, single_frame
from train.data import clip_example, collate, single_example, spliced_example


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


class ScriptedSession(StreamSession):
    """A session that 'generates' the given answers and records every token id it feeds the model."""

    def __init__(self, adapter, answers: list[str]):
        super().__init__(adapter, WindowConfig(policy="full", budget=None), skip=None)  # examples hold every frame
        self.fed: list[int] = []
        tok, eou = adapter.tokenizer, adapter.eos_token_ids[0]
        self.planned = [tok(" " + a, add_special_tokens=False)["input_ids"] + [eou] for a in answers]

    def _run(self, inputs):
        self.fed += inputs["input_ids"][0].tolist()
        return super()._run(inputs)

    def _pick(self, logits, temperature, gen):
        token = self.planned[0].pop(0)
        if not self.planned[0]:
            self.planned.pop(0)
        return token


@pytest.mark.parametrize("make", [
    lambda a: clip_example(a, seed=11, n_frames=(8, 8), max_events=2, n_questions=3),
    lambda a: single_example(a, seed=5, n_questions=2),
])  # fmt: skip
def test_a_chat_example_is_what_the_session_feeds(adapter, make):
    ex = make(adapter)
    session = ScriptedSession(adapter, [qa.answer for qa in ex.qas])
    session.ingest(Chunk(tuple(ex.frames)))
    got = [session.answer(qa.question, max_new_tokens=16).strip() for qa in ex.qas]
    assert got == [qa.answer for qa in ex.qas]
    # the session closes the last turn with answer_end() ("<end_of_utterance>\n"); the example stops at
    # the last answer's <end_of_utterance>, which the session picked but did not feed
    assert session.fed[: len(ex.input_ids)] == ex.input_ids
    assert len(session.fed) > len(ex.input_ids)
    for (a, b), qa in zip(ex.targets, ex.qas):
        assert adapter.tokenizer.decode(ex.input_ids[a:b]) == f" {qa.answer}<end_of_utterance>"


def test_each_branch_is_what_a_fresh_session_feeds_for_its_question(adapter):
    ex = spliced_example(adapter, seed=11, background=random_script(3, duration_s=30, n_events=0), n_questions=3)
    assert not ex.chat and len(ex.qas) == len(ex.starts) == 3
    ends = ex.starts[1:] + [len(ex.input_ids)]
    for qa, a, b in zip(ex.qas, ex.starts, ends):
        session = ScriptedSession(adapter, [qa.answer])
        session.ingest(Chunk(tuple(ex.frames)))
        assert session.answer(qa.question, max_new_tokens=16).strip() == qa.answer
        assert session.fed[: ex.starts[0] + b - a] == ex.input_ids[: ex.starts[0]] + ex.input_ids[a:b]
    with pytest.raises(ValueError, match="branch"):
        collate([ex], pad_id=0)


def test_chat_questions_differ_and_are_right(adapter):
    ex = single_example(adapter, seed=5, n_questions=3)
    frame, script = single_frame(5, p_empty=0.04)
    truth = {qa.question: qa.answer for qa in frame_questions(script, frame.time_s)}
    assert len(ex.qas) == 3 and len({qa.question for qa in ex.qas}) == 3
    assert all(truth[qa.question] == qa.answer for qa in ex.qas)


def test_collate_labels_only_the_answers(adapter):
    examples = [single_example(adapter, seed=s, n_questions=2) for s in (1, 2)]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, max(len(e.input_ids) for e in examples))
    for i, e in enumerate(examples):
        labelled = (batch["labels"][i] != -100).nonzero().flatten().tolist()
        assert labelled == [t for a, b in e.targets for t in range(a, b)]
        assert batch["labels"][i, labelled].tolist() == [e.input_ids[t] for t in labelled]
