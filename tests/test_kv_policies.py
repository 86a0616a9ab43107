"""The named policies as compositions: the same tokens kept as before the scorer refactor, specs that
parse to the same composition, and a frozen `WindowConfig` whose `replace()` equals a fresh build."""

import dataclasses
import json

import pytest
import torch

from kv_golden import CASES, GOLDEN, stream
from kv_golden import POLICIES as GOLDEN_POLICIES
from streamer.errors import ConfigError
from streamer.kv_config import POLICIES, Composition, WindowConfig


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_named_policy_round_trips_through_its_spec(policy):
    assert Composition.parse(Composition.parse(policy).spec) == Composition.parse(policy)


@pytest.mark.parametrize("name", list(CASES))
def test_named_policies_keep_the_tokens_they_kept_before_the_refactor(name):
    want = json.loads(GOLDEN.read_text())[name]
    policy, kw = CASES[name]
    got = stream(policy, **kw)
    assert got["positions"] == want["positions"]
    for part in ("keys", "values"):
        assert got[part] == pytest.approx(want[part], rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("policy", GOLDEN_POLICIES)
def test_a_named_policy_equals_its_spec(policy):
    named = Composition.parse(policy)
    assert Composition.parse(named.spec) == named
    got = stream(named.spec)
    want = json.loads(GOLDEN.read_text())[f"{policy}/default"]
    assert got["positions"] == want["positions"]


@pytest.mark.parametrize("start,change", [
    ({"policy": "combined"}, {"policy": "saddle"}),
    ({"policy": "text-prior", "budget": 512}, {"budget": 64}),
    ({"policy": "combined", "layer_budget": "adaptive"}, {"n_sink": 8}),
    ({"policy": "saddle"}, {"policy": "knorm+pool=3"}),
])
def test_replace_equals_building_with_those_arguments(start, change):
    replaced = dataclasses.replace(WindowConfig(**start), **change)
    fresh = WindowConfig(**{**start, **change})
    assert replaced == fresh
    assert replaced.resolved == fresh.resolved


def test_replace_from_combined_to_saddle_drops_combined_merge_and_redundancy():
    cfg = dataclasses.replace(WindowConfig(policy="combined"), policy="saddle")
    assert cfg.resolved.merge == "none" and cfg.resolved.redundancy is None


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        WindowConfig().budget = 4


@pytest.mark.parametrize("spec,words", [
    ("knorm+bogus", "bogus"), ("bogus", "unknown policy .bogus"), ("pool=3", "no scorer"), ("knorm+knorm", "twice"), ("knorm+pool=4", "odd"),
    ("knorm+merge=glue", "glue"), ("knorm+redundancy=x", "redundancy=x"), ("attention+decay=2", "decay=2"),
])
def test_bad_specs_name_the_bad_part(spec, words):
    with pytest.raises(ConfigError, match=words):
        WindowConfig(policy=spec, budget=64)


@pytest.mark.parametrize("field,value", [
    ("obs_window", 2.5), ("recent", -3), ("n_sink", 2.5), ("budget", True), ("merge_window", 0), ("max_gap", -1),
    ("score_decay", 0), ("compiled", "yes"), ("policy", 3),
])
def test_wrong_types_and_ranges_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        WindowConfig(**{field: value})


def test_a_one_token_chunk_is_cut_to_the_budget_not_the_decode_slack():
    from transformers import LlamaConfig

    from streamer.kv_window import KVWindowCache
    from streamer.shared_types import Modality

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    cache = KVWindowCache(cfg, WindowConfig(policy="knorm", budget=64, decode_slack=4))
    layer = cache.layers[0]
    for n in (60, 1, 1):  # a chunk, then two one-token chunks (tagged: not decoding)
        cache.tag(torch.full((n,), int(Modality.TEXT)))
        cache.update(torch.randn(1, 1, n, 16), torch.randn(1, 1, n, 16), 0)
        cache.compress()
    cache.update(torch.randn(1, 1, 4, 16), torch.randn(1, 1, 4, 16), 0)  # over the budget
    cache.compress()
    assert layer.get_seq_length() == 64
    cache.tag(torch.full((1,), int(Modality.TEXT)))
    cache.update(torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16), 0)
    cache.compress()
    assert layer.get_seq_length() == 64  # a tagged one-token chunk: the budget, not budget - decode_slack
    cache.update(torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16), 0)  # untagged: a decoding step
    cache.compress()
    assert layer.get_seq_length() == 60


def test_recall_keeps_the_frames_combined_keeps_when_the_text_fits():
    """`recall` differs from `combined` only in how text ranks among text: on a video whose conversation text
    fits in the budget it keeps the same tokens, so the video numbers of `combined` carry over."""
    from transformers import LlamaConfig

    from streamer.kv_window import KVWindowCache
    from streamer.shared_types import Modality

    kept = {}
    for policy in ("combined", "recall"):
        cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        cache = KVWindowCache(cfg, WindowConfig(policy=policy, budget=64, n_sink=4, recent=8))
        gen = torch.Generator().manual_seed(9)
        for step in range(30):
            if step in (0, 29):  # a system prompt, then a question: 6 text tokens
                mod, times, n = torch.full((3,), int(Modality.TEXT)), None, 3
            else:  # a timestamp token + 9 image tokens
                mod = torch.tensor([int(Modality.TEXT)] + [int(Modality.IMAGE)] * 9)
                times, n = torch.full((10,), float(step)), 10
            cache.tag(mod, times)
            for i, layer in enumerate(cache.layers):
                cache.update(torch.randn(1, 2, n, 16, generator=gen), torch.randn(1, 2, n, 16, generator=gen), i)
                layer.observe(torch.randn(1, 4, n, 16, generator=gen), 0.25)
        kept[policy] = [l.position.clone() for l in cache.layers]
        assert cache.stats()["evicted"] > 0
    assert all(torch.equal(a, b) for a, b in zip(kept["combined"], kept["recall"]))
