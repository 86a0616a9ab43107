"""Stage PW's trainer (`train/train_watch.py`): it trains only the presence adapter, through the session's own
standing-question pass, writes a whole `tiny` weights file and resumes from one; its clips continue a long
empty past when asked to, and its seeds are never the held-out ones."""

import json

import torch

from streamer.models.tiny import WEIGHTS_FILE, read_trained
from train import train_watch
from train.data import HELD_OUT_SEED


def test_clips_follow_the_ground_truth_and_can_continue_a_long_past():
    from streamer.world.presence import Lookout, on_screen
    from streamer.world.scene import random_script

    script, chunks, checks = train_watch.clip(train_watch.SEED0 + 3, 6)
    assert all(len(c.frames) <= 4 for c in chunks) and len(checks) == len(chunks)
    for chunk, qas in zip(chunks, checks):
        for qa in qas:
            lk = _lookout(qa.question, Lookout)
            assert (qa.answer == "yes") == on_screen(script, lk, chunk.frames[-1].time_s)
    past = random_script(train_watch.BG_SEED0, duration_s=40, n_events=0)
    script, chunks, _ = train_watch.clip(train_watch.SEED0 + 3, 6, background=past)
    assert chunks[0].frames[0].time_s == 40 and script.background == past.background and script.seed == past.seed
    assert all(e.start_s >= 40 for e in script.events)


def _lookout(question: str, Lookout):
    words = question.rstrip("?").split()
    return Lookout(digit=words[3]) if words[1] == "the" else Lookout(words[3], words[4])


def test_seeds_are_training_seeds():
    assert train_watch.SEED0 < train_watch.BG_SEED0 < HELD_OUT_SEED - 1_000_000


def test_one_step_trains_only_the_adapter_and_a_run_resumes(tmp_path):
    out, results = tmp_path / "pw.safetensors", tmp_path / "pw.json"
    base = ["--chat-weights", str(WEIGHTS_FILE), "--clips", "1", "--questions", "2", "--out", str(out),
            "--results", str(results), "--threads", "2"]
    train_watch.main([*base, "--init-from", str(WEIGHTS_FILE), "--steps", "1", "--rank", "20"])
    state, _, _ = read_trained(out)
    chat, _, _ = read_trained(WEIGHTS_FILE)
    for key, value in chat.items():  # the chat parts are written back unchanged
        if not key.startswith("watch."):
            assert torch.equal(state[key], value), key
    watch = {k for k in state if k.startswith("watch.")}
    assert len(watch) == 30 * 3 * 2 and state[next(k for k in watch if k.endswith(".A"))].shape[0] == 20
    assert json.loads(results.read_text())["steps"][0]["step"] == 1
    train_watch.main([*base, "--resume", str(out), "--steps", "2", "--background", "6,8"])
    steps = json.loads(results.read_text())["steps"]
    assert [s["step"] for s in steps] == [2] and steps[0]["answers"] > 0
    assert not torch.equal(read_trained(out)[0][next(iter(sorted(watch)))], state[next(iter(sorted(watch)))])


def test_the_adapter_starts_as_the_init_weights_minus_the_chat_weights():
    key = "model.text_model.layers.0.self_attn.{}.weight"
    shapes = {key.format(p): (5, 6) for p in train_watch.TARGETS}
    chat = {f"lora.{key.format('q_proj')}.A": torch.randn(8, 6), f"lora.{key.format('q_proj')}.B": torch.randn(5, 8)}
    init = {f"lora.{key.format('q_proj')}.A": torch.randn(8, 6), f"lora.{key.format('q_proj')}.B": torch.randn(5, 8)}
    factors = train_watch.delta_init(init, chat, 20, 1, shapes)
    a, b = factors[key.format("q_proj")]
    assert a.shape == (20, 6) and b.shape == (5, 20)
    want = init[f"lora.{key.format('q_proj')}.B"] @ init[f"lora.{key.format('q_proj')}.A"]
    want = want - chat[f"lora.{key.format('q_proj')}.B"] @ chat[f"lora.{key.format('q_proj')}.A"]
    torch.testing.assert_close(b @ a, want)  # at the start, the pass computes with the init's weights
    a, b = factors[key.format("k_proj")]  # no LoRA to start from: no change, fresh factors to learn
    assert a.shape == (20, 6) and torch.count_nonzero(b @ a) == 0
