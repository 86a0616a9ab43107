"""AirCache options of the bounded cache: elite observation window and adaptive layer-wise budgets."""

import pytest
import torch
from transformers import LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from streamer.errors import ConfigError
from streamer.kv_scoring import attention_spread, elite_attention, observed_attention, split_budget
from streamer.kv_window import KVWindowCache, WindowConfig, use_window_attention, window_attention
from streamer.shared_types import Modality
from streamer.rope import rope_inv_freq, rotate
from conftest import SLOW_A, tiny_config


def adaptive(budget=96, **kw) -> WindowConfig:
    return WindowConfig(policy="saddle", budget=budget, n_sink=2, recent=8, layer_budget="adaptive", **kw)


def feed(cache: KVWindowCache, rounds: int, query_for_layer, n=16, seed=0):
    """Append `rounds` chunks of n tokens; each layer gets its own queries from query_for_layer(i, n)."""
    gen = torch.Generator().manual_seed(seed)
    hot = torch.zeros(16)
    hot[SLOW_A] = 1.0
    for _ in range(rounds):
        cache.tag(torch.full((n,), int(Modality.IMAGE)), torch.zeros(n))
        for i, layer in enumerate(cache.layers):
            k = torch.randn(1, 2, n, 16, generator=gen)
            k[:, :, 0] = 6.0 * hot  # one token per chunk that a focused query finds
            cache.update(k, torch.randn(1, 2, n, 16, generator=gen), i)
            layer.observe(query_for_layer(i, n), 16**-0.5)


def focused(n):
    q = torch.zeros(1, 4, n, 16)
    q[..., SLOW_A] = 8.0
    return q


def test_concentrated_layer_gets_less_budget_than_flat_one():
    cache = KVWindowCache(tiny_config(), adaptive())
    feed(cache, 30, lambda i, n: focused(n) if i == 0 else torch.zeros(1, 4, n, 16))
    b0, b1 = cache.stats()["layer_budgets"]
    assert b0 < b1 and b0 + b1 == 2 * 96
    assert cache.layers[0].spread < cache.layers[1].spread
    assert b0 >= cache.cfg.layer_floor
    tokens = cache.stats()["tokens_per_layer"]
    assert tokens == [b0, b1]


def test_uniform_importance_splits_uniformly():
    cache = KVWindowCache(tiny_config(), adaptive())
    feed(cache, 30, lambda i, n: torch.zeros(1, 4, n, 16))
    assert cache.stats()["layer_budgets"] == [96, 96]


def test_floor_holds_for_a_concentrated_layer():
    concentrated = []
    for floor in (24, 60, 90):
        cache = KVWindowCache(tiny_config(), adaptive(layer_floor=floor))
        feed(cache, 30, lambda i, n: 4 * focused(n) if i == 0 else torch.zeros(1, 4, n, 16))
        budgets = cache.stats()["layer_budgets"]
        assert budgets[0] >= floor and sum(budgets) == 192 and budgets[0] < budgets[1]
        concentrated.append(budgets[0])
    assert concentrated == sorted(concentrated) and concentrated[0] < concentrated[-1]


def test_split_budget_is_exact_and_bounded():
    spread = [0.1, 0.5, 0.2, 0.9, 0.3]
    out = split_budget(1000, spread, floor=50, cap=400)
    assert sum(out) == 1000 and min(out) >= 50 and max(out) <= 400
    assert [out[i] for i in sorted(range(5), key=spread.__getitem__)] == sorted(out)  # monotone in spread
    assert split_budget(90, [1.0, 1.0, 1.0], floor=10, cap=80) == [30, 30, 30]
    capped = split_budget(300, [100.0, 1.0, 1.0], floor=10, cap=120)
    assert capped[0] == 120 and sum(capped) == 300
    with pytest.raises(ValueError):
        split_budget(10, [1.0, 1.0], floor=6, cap=10)


def test_attention_spread_orders_flat_above_peaked():
    flat = torch.ones(1, 2, 100)
    peaked = torch.zeros(1, 2, 100)
    peaked[..., 3] = 1.0
    assert attention_spread(flat) == pytest.approx(1.0)
    assert attention_spread(peaked) == pytest.approx(0.01)


def test_elite_window_picks_the_queries_that_look_at_frames():
    gen = torch.Generator().manual_seed(1)
    keys = torch.randn(1, 2, 40, 16, generator=gen)
    visual = torch.zeros(40, dtype=torch.bool)
    visual[:20] = True
    keys[:, :, 5] = 0.0
    keys[:, :, 5, 3] = 6.0  # a visual key that one direction finds
    query = torch.zeros(1, 4, 10, 16)
    query[:, :, 7, 3] = 8.0  # text query 7 looks hard at the visual key, in every head
    candidates = torch.zeros(10, dtype=torch.bool)
    candidates[4:] = True  # the last 6 queries are conversation text
    elite = elite_attention(query, keys, 0.25, 1, candidates, visual).sum(dim=(2, 3))
    last = observed_attention(query, keys, 0.25, 1).sum(dim=(2, 3))
    assert int(elite[0, 0].argmax()) == 5  # scored by query 7, not by the last one
    assert int(last[0, 0].argmax()) != 5
    no_text = elite_attention(query, keys, 0.25, 1, torch.zeros(10, dtype=torch.bool), visual).sum(dim=(2, 3))
    torch.testing.assert_close(no_text, last)  # frames-only pass: falls back to the last-N window


def test_shifting_queries_and_keys_together_keeps_attention():
    cfg = tiny_config()
    inv = rope_inv_freq(cfg)
    gen = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 2, 5, 16, generator=gen), torch.randn(1, 2, 9, 16, generator=gen)
    shift = -37
    qs = rotate(q, torch.full((1, 2, 5), shift), inv)
    ks = rotate(k, torch.full((1, 2, 9), shift), inv)
    torch.testing.assert_close(qs @ ks.transpose(-1, -2), q @ k.transpose(-1, -2), atol=1e-4, rtol=1e-4)


class _Attn:
    layer_idx = 99  # not a cache layer: plain SDPA path
    is_causal = True
    num_key_value_groups = 2
    training = False


def test_window_attention_builds_a_causal_mask_for_other_lengths():
    from streamer import kv_window

    cache = KVWindowCache(tiny_config(), adaptive())
    layer = cache.layers[1]
    gen = torch.Generator().manual_seed(3)
    k, v = torch.randn(1, 2, 12, 16, generator=gen), torch.randn(1, 2, 12, 16, generator=gen)
    layer.update(k, v, model_position=0)
    q = torch.randn(1, 4, 3, 16, generator=gen)
    wrong = torch.ones(1, 1, 3, 20, dtype=torch.bool)  # a mask built for another layer's length
    module = _Attn()
    module.layer_idx = 1
    kv_window._observer.layer = layer
    out, _ = window_attention(module, q, layer.keys, layer.values, wrong)
    causal = torch.ones(3, 12, dtype=torch.bool).tril(diagonal=9)[None, None]
    ref, _ = sdpa_attention_forward(module, q, layer.keys, layer.values, causal)
    torch.testing.assert_close(out, ref)


def test_adaptive_budgets_run_a_real_model_with_different_layer_lengths():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(num_hidden_layers=3)).eval()
    with torch.no_grad():  # sharpen layer 0's attention so the layers differ in spread
        model.model.layers[0].self_attn.q_proj.weight.mul_(30.0)
        model.model.layers[0].self_attn.k_proj.weight.mul_(3.0)
    use_window_attention(model)
    cache = KVWindowCache(model.config, WindowConfig(policy="combined", budget=48, n_sink=2, recent=8,
                                                     layer_budget="adaptive", obs_select="elite"))
    gen = torch.Generator().manual_seed(4)
    lengths = set()
    with torch.no_grad():
        for _ in range(40):
            logits = model(torch.randint(0, 128, (1, 12), generator=gen), past_key_values=cache).logits
            assert torch.isfinite(logits).all()
            st = cache.stats()
            assert sum(st["tokens_per_layer"]) <= 3 * 48
            lengths.add(tuple(st["tokens_per_layer"]))
        out = model.generate(torch.randint(0, 128, (1, 5), generator=gen), past_key_values=cache,
                             max_new_tokens=10, do_sample=False,
                             attention_mask=torch.ones(1, cache.stats()["seen_tokens"] + 5, dtype=torch.long))
    assert out.shape[1] == 15
    assert any(len(set(t)) > 1 for t in lengths)  # the layers really did hold different lengths


@pytest.mark.parametrize("kw,msg", [
    ({"obs_select": "best"}, "obs_select"),
    ({"layer_budget": "smart"}, "layer_budget"),
    ({"layer_floor": 2}, "layer_floor"),
    ({"spread_momentum": 1.0}, "spread_momentum"),
])
def test_aircache_config_errors(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        WindowConfig(budget=64, **kw)
