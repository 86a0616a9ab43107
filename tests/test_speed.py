"""`--speed int8` (`streamer.models.runtime.make_fast`): the vision tower's linear layers in int8, inside the error
budget the issue sets (image features at cosine >= 0.99, first answer token within 0.01 nats of float32), on every option
path; refused where it cannot run."""

import pytest
import torch

from conftest import one_line, world_chunks
from streamer.cli import main
from streamer.errors import ConfigError
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession

QUESTIONS = ("What is on screen?", "Is there a red circle on screen?", "What digit is shown?")


@pytest.fixture(scope="module")
def pair():
    return load_model("tiny"), load_model("tiny", speed="int8")


def test_int8_quantizes_the_vision_tower_and_projector_not_the_language_model(pair):
    exact, fast = pair
    linear = lambda m: [n for n, x in m.named_modules() if type(x) is torch.nn.Linear]  # noqa: E731
    assert all(n.startswith("model.text_model.") or n == "lm_head" for n in linear(fast.model))
    assert {n for n in linear(exact.model) if n.startswith("model.vision_model.")} and linear(fast.model) == [
        n for n in linear(exact.model) if n.startswith("model.text_model.") or n == "lm_head"]
    assert fast.describe()["speed"] == "int8" and exact.describe()["speed"] == "exact"


def test_int8_stays_inside_the_error_budget_of_the_trained_tiny(pair):
    exact, fast = pair
    _, chunks = world_chunks(16, 4)
    frames = [f for chunk in chunks for f in chunk.frames]
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a.flatten(0, -2), b.flatten(0, -2), dim=-1)  # noqa: E731
    features = [torch.cat(list(a.frame_inputs(frames, encode=True)["mm_encoder_outputs"]["image"].pooler_output))
                for a in pair]  # (frames x tokens, hidden)
    assert float(cos(*features).min()) >= 0.99
    kls = []
    for question in QUESTIONS:
        logps = []
        for adapter in pair:
            session = StreamSession(adapter, WindowConfig(policy="combined", budget=400))
            for chunk in chunks:
                session.ingest(chunk)
            logps.append(torch.log_softmax(session._forward(session._question_prompt(question, 8)).double(), -1))
        kls.append(float((logps[0].exp() * (logps[0] - logps[1])).sum()))
    assert max(kls) <= 0.01, kls


def test_int8_is_refused_where_it_cannot_run(capsys, video):
    with pytest.raises(ConfigError, match="runs on the CPU in float32"):
        load_model("tiny-random", dtype="bfloat16", speed="int8")
    with pytest.raises(ConfigError, match="unknown speed"):
        load_model("tiny-random", speed="fast")
    assert main([video, "--model", "tiny-random", "--speed", "int8", "--dtype", "bfloat16", "-q", "hi?"]) == 2
    assert "--speed int8 runs on the CPU in float32" in one_line(capsys.readouterr().err)
