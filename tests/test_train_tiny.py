"""Training mechanics of `tiny` that could silently go wrong: events spliced into a background video
whose keys and values are reused, question branches packed over one cache, image features placed in
the input embeddings, and the exact-answer rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from streamer.shared_types import Conversation
from streamer.models.registry import load_model
from streamer.frames import Chunk
from streamer.world.scene import random_script
from train.data import spliced_example
from train.losses import answer_loss, input_embeds, word_loss
from train.splice import branch_hidden, segmented_hidden


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


def background_of(text_model, embeds):
    """Per layer (keys, values) of a forward pass without gradient over embeds (1, T, D)."""
    cache = DynamicCache(config=text_model.config)
    with torch.no_grad():
        out = text_model(inputs_embeds=embeds, past_key_values=cache, use_cache=True).last_hidden_state
    return [(layer.keys, layer.values) for layer in cache.layers], out


def test_segmented_forward_copies_the_background_and_computes_the_rest(adapter):
    text_model = adapter.model.model.text_model
    torch.manual_seed(2)
    embeds = torch.randn(1, 40, text_model.config.hidden_size)
    grad = torch.zeros(40, dtype=torch.bool)
    grad[5:9] = grad[20:23] = grad[33:] = True  # starts off, several runs, ends on
    background, full = background_of(text_model, embeds)
    full_in = embeds.clone().requires_grad_(True)
    one_pass = text_model(inputs_embeds=full_in).last_hidden_state
    x = embeds.clone().requires_grad_(True)
    seg = segmented_hidden(text_model, x, grad, background)
    torch.testing.assert_close(seg[:, grad], full[:, grad], atol=1e-5, rtol=1e-4)
    assert (seg[:, ~grad] == 0).all()

    seg[:, -3:].sum().backward()
    one_pass[:, -3:].sum().backward()
    g = x.grad[0].abs().sum(-1)
    assert (g[~grad] == 0).all()  # copied runs get no gradient ...
    assert (g[grad] > 0).all()  # ... computed ones do, the early ones through the cache
    # the last run sees only itself after it, so its gradient is the one-pass gradient
    torch.testing.assert_close(x.grad[0, 33:], full_in.grad[0, 33:], atol=1e-5, rtol=1e-4)


def test_a_different_background_changes_only_what_attends_to_it(adapter):
    text_model = adapter.model.model.text_model
    torch.manual_seed(3)
    embeds = torch.randn(1, 20, text_model.config.hidden_size)
    grad = torch.zeros(20, dtype=torch.bool)
    grad[:4] = grad[12:] = True
    own, _ = background_of(text_model, embeds)
    other, _ = background_of(text_model, torch.randn_like(embeds))
    a = segmented_hidden(text_model, embeds, grad, own)
    b = segmented_hidden(text_model, embeds, grad, other)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # before the copied run: the same
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)  # after it: the copied keys are used


def test_spliced_events_leave_the_background_frames_untouched(adapter):
    background = random_script(4, duration_s=40, n_events=0)
    ex = spliced_example(adapter, seed=9, background=background, max_events=2, n_questions=2)
    assert not ex.chat and ex.script.events and ex.script.background == background.background
    plain = adapter.chunk_prompt(Chunk(tuple(background.frames(1.0))), Conversation())
    assert ex.input_ids[: ex.starts[0]] == plain.input_ids[0].tolist()  # same tokens, so its keys can be reused
    for f, g in zip(ex.frames, background.frames(1.0)):
        assert f.time_s == g.time_s
        assert np.array_equal(f.image, g.image) == (ex.script.event_at(f.time_s) is None), f.time_s


def test_near_events_marks_text_event_frames_and_the_last_frame(adapter):
    ex = spliced_example(adapter, seed=3, background=random_script(1, duration_s=40, n_events=0), max_events=2)
    keep = ex.near_events(margin_s=1.0)
    times = torch.tensor(ex.times, dtype=torch.float64)
    assert keep[times.isnan()].all()  # prompt text, questions and answers
    shown = {f.time_s for f in ex.frames if ex.script.event_at(f.time_s)}
    assert shown
    for f in ex.frames:
        tokens = keep[times == f.time_s]
        near = any(abs(f.time_s - s) <= 1 for s in shown) or f is ex.frames[-1]
        assert tokens.numel() > 0 and bool(tokens.all()) == near and bool(tokens.any()) == near, f.time_s
    assert 0 < int(keep.sum()) < keep.numel() // 2  # most of a sparse clip is background


def test_branches_see_the_frames_and_only_their_own_question(adapter):
    ex = spliced_example(adapter, seed=8, background=random_script(2, duration_s=30, n_events=0), n_questions=3)
    assert len(ex.starts) == 3
    text_model = adapter.model.model.text_model
    torch.manual_seed(1)
    table = torch.randn(adapter.model.config.text_config.vocab_size, text_model.config.hidden_size)
    embeds = table[torch.tensor([ex.input_ids])]  # (1, T, D); stand-in embeddings are enough here
    n, ends = ex.starts[0], ex.starts[1:] + [len(ex.input_ids)]
    background, _ = background_of(text_model, embeds[:, :n])  # the frames' own keys: exact
    hidden, labels = branch_hidden(text_model, embeds, ex, background)
    assert hidden.shape[:2] == labels.shape == (1, len(ex.input_ids) - n)
    for (a, b), (ta, tb) in zip(zip(ex.starts, ends), ex.targets):
        alone = torch.cat([embeds[:, :n], embeds[:, a:b]], dim=1)  # the frames, then only this question
        want = text_model(inputs_embeds=alone).last_hidden_state[0, n:]
        torch.testing.assert_close(hidden[0, a - n : b - n], want, atol=1e-4, rtol=1e-4)
        assert a <= ta < tb <= b and labels[0, ta - n : tb - n].tolist() == ex.input_ids[ta:tb]
    assert labels.ne(-100).sum() == sum(tb - ta for ta, tb in ex.targets)


def test_answer_loss_counts_an_answer_right_only_when_all_its_tokens_are():
    weight = torch.eye(6) * 10  # (V, D): hidden one-hot at v predicts token v
    labels = torch.full((2, 8), -100)
    labels[0, 2:4] = torch.tensor([1, 2])  # answer 1: predicted at positions 1 and 2
    labels[0, 6:8] = torch.tensor([3, 4])  # answer 2: at 5 and 6
    labels[1, 5:7] = torch.tensor([5, 0])  # answer 3: at 4 and 5
    predicted = torch.zeros(2, 8, dtype=torch.long)
    predicted[0, 1:3] = torch.tensor([1, 2])  # answer 1 right
    predicted[0, 5:7] = torch.tensor([3, 1])  # answer 2: second token wrong
    predicted[1, 4:6] = torch.tensor([5, 0])  # answer 3 right
    hidden = torch.nn.functional.one_hot(predicted, 6).float()  # (2, 8, 6)
    loss, exact = answer_loss(hidden, labels, weight)
    assert exact == pytest.approx(2 / 3)
    perfect = hidden.clone()
    perfect[0, 6] = torch.nn.functional.one_hot(torch.tensor(4), 6).float()
    better, all_right = answer_loss(perfect, labels, weight)
    assert all_right == 1.0 and better < loss


def test_input_embeds_puts_image_features_in_the_placeholders_in_order():
    weight = torch.arange(12.0).view(6, 2)  # (V, D)
    ids = torch.tensor([[1, 5, 5, 2], [5, 3, 0, 0]])  # 5: the image placeholder
    feats = torch.tensor([[[-1.0, -1.0]], [[-2.0, -2.0]], [[-3.0, -3.0]]])  # (3 images, 1 token each, D)
    embeds = input_embeds(ids, feats, weight, image_token_id=5)  # (2, 4, D)
    assert embeds[0, 1:3].tolist() == [[-1.0, -1.0], [-2.0, -2.0]] and embeds[1, 0].tolist() == [-3.0, -3.0]
    assert embeds[0, 0].tolist() == weight[1].tolist() and embeds[1, 1].tolist() == weight[3].tolist()


def test_word_loss_is_lowest_when_the_slots_are_the_target_words():
    torch.manual_seed(0)
    colours, digits = torch.randn(4, 8), torch.randn(11, 8)  # (candidates, D) per word slot
    filler = torch.randn(8)
    targets = [torch.tensor([0, 3]), torch.tensor([7, 10])]  # two frames
    right = torch.stack([torch.stack([colours[0], digits[7], filler]), torch.stack([colours[3], digits[10], filler])])  # (2, 3, 8)
    loss, acc = word_loss(right, [colours, digits], targets, filler, rms=1.0)
    assert acc == [1.0, 1.0] and loss < 0.01
    swapped = right.clone()
    swapped[0, 1] = digits[2]  # frame 0 says the wrong digit
    worse, acc = word_loss(swapped, [colours, digits], targets, filler, rms=1.0)
    assert acc == [1.0, 0.5] and worse > loss + 1
    noisy_filler = right.clone()
    noisy_filler[:, 2] += 1.0
    assert word_loss(noisy_filler, [colours, digits], targets, filler, rms=1.0)[0] > loss + 0.5


def test_kind_weights_steer_which_questions_a_clip_draws():
    import random

    from train.config import TrainConfig
    from train.data import pick_questions

    script = random_script(5, duration_s=60, n_events=4, event_s=(2, 4))
    kinds = {q.kind for q in pick_questions(random.Random(0), script, 3, TrainConfig(kind_weights="when=1e9").kind_weight_overrides())}
    assert kinds == {"when"}  # four objects with distinct digits: three "when" questions outweigh the rest
    none = TrainConfig(kind_weights="when=0,needle_digit=0").kind_weight_overrides()
    assert not {"when", "needle_digit"} & {q.kind for q in pick_questions(random.Random(0), script, 50, none)}
    for bad in ("when", "when=x", "when=-1", "=2", "when=inf"):
        with pytest.raises(ValueError, match="kind_weights"):
            TrainConfig(kind_weights=bad)
