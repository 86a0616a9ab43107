"""Properties of the bounded KV cache, on random tensors and a tiny random Llama (CPU, seconds)."""

import math

import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from streamer.errors import ConfigError
from streamer.kv_merge import MERGE_MODES, merge_into_kept, nearest_kept
from streamer.kv_window import POLICIES, KVWindowCache, WindowConfig, use_window_attention
from streamer.shared_types import Modality
from streamer.rope import rope_inv_freq, rotate

from conftest import SLOW_A, SLOW_B, VARIANTS, tiny_config, window

EVICTING = [p for p in POLICIES if p != "full"]
# the AirCache options on top of the policies (issue: every earlier property must still hold with them)
AIR = {
    "elite": {"obs_select": "elite"},
    "adaptive": {"layer_budget": "adaptive"},
    "elite+adaptive": {"obs_select": "elite", "layer_budget": "adaptive"},
}
AIR_CASES = [pytest.param(p, kw, id=f"{p}-{name}") for p in EVICTING for name, kw in AIR.items()]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LlamaForCausalLM(tiny_config()).eval()
    use_window_attention(m)
    return m


@pytest.mark.parametrize("policy,merge,air", [(p, m, {}) for p, m in VARIANTS] + [
    pytest.param(p, None, kw, id=f"{p}-{name}") for p in EVICTING for name, kw in AIR.items()])
def test_budget_above_length_matches_dynamic_cache(model, policy, merge, air):
    ids = torch.randint(0, 128, (1, 90), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids, past_key_values=DynamicCache()).logits
        cache = KVWindowCache(model.config, window(policy, merge, budget=128, **air))
        got = torch.cat([model(ids[:, i : i + 15], past_key_values=cache).logits for i in range(0, 90, 15)], 1)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert cache.stats()["evicted"] == 0


class FakeStream:
    """Appends random KV chunks to a cache the way a model does: update each layer, then observe."""

    def __init__(self, cache: KVWindowCache, heads=2, q_heads=4, dim=16, seed=0):
        self.cache, self.heads, self.q_heads, self.dim = cache, heads, q_heads, dim
        self.gen = torch.Generator().manual_seed(seed)

    def append(self, n: int, modality=Modality.TEXT, times=None, keys=None, query=None, decode=False):
        """decode: an untagged one-token append, as `generate` makes (a tagged one is a chunk)."""
        if not decode:
            self.cache.tag(torch.full((n,), int(modality)), times)
        for layer_idx, layer in enumerate(self.cache.layers):
            k = keys if keys is not None else torch.randn(1, self.heads, n, self.dim, generator=self.gen)
            v = torch.randn(1, self.heads, n, self.dim, generator=self.gen)
            self.cache.update(k, v, layer_idx)
            q = query if query is not None else torch.randn(1, self.q_heads, n, self.dim, generator=self.gen)
            layer.observe(q, self.dim**-0.5)


@pytest.mark.parametrize("policy,merge,air", [(p, m, {}) for p, m in VARIANTS if p != "full"] + [
    pytest.param(p, None, kw, id=f"{p}-{name}") for p in EVICTING for name, kw in AIR.items()])
def test_ten_thousand_tokens_never_exceed_budget(policy, merge, air):
    cache = KVWindowCache(tiny_config(), window(policy, merge, budget=96, n_sink=4, recent=16, **air))
    stream = FakeStream(cache)
    gen = torch.Generator().manual_seed(2)
    seen, t = 0, 0.0
    while seen < 10_000:
        n = int(torch.randint(1, 80, (1,), generator=gen))
        if torch.rand(1, generator=gen) < 0.6:
            stream.append(n, Modality.IMAGE, torch.full((n,), t))
            t += 1.0
        else:
            stream.append(n)
        seen += n
        st = cache.stats()
        assert sum(st["tokens_per_layer"]) <= 2 * 96  # the total budget
        assert all(t <= b for t, b in zip(st["tokens_per_layer"], st["layer_budgets"]))
        if not air:
            assert max(st["tokens_per_layer"]) <= 96
    stats = cache.stats()
    assert stats["seen_tokens"] == seen
    assert stats["evicted"] == 2 * seen - sum(stats["tokens_per_layer"])  # everything past the budgets
    assert stats["kv_bytes"] == stats["budget_bytes"]
    if merge not in (None, "none"):
        assert stats["merged"] == stats["evicted"]


@pytest.mark.parametrize("policy", EVICTING)
@pytest.mark.parametrize("evict_per", ["head", "layer"])
@pytest.mark.parametrize("air", list(AIR.values()) + [{}], ids=list(AIR) + ["plain"])
def test_sinks_and_recent_survive(policy, evict_per, air):
    cache = KVWindowCache(tiny_config(), window(policy, budget=64, n_sink=4, recent=12, evict_per=evict_per,
                                                **air))
    stream = FakeStream(cache)
    for i in range(40):
        stream.append(13, Modality.IMAGE if i % 2 else Modality.TEXT)
    total = 40 * 13
    for layer in cache.layers:
        for head in layer.position[0]:
            kept = set(head.tolist())
            assert set(range(4)) <= kept
            assert set(range(total - 12, total)) <= kept
            assert head.tolist() == sorted(head.tolist())  # stream order is preserved


@pytest.mark.parametrize("policy", ["text-prior", "combined"])
@pytest.mark.parametrize("air", [{}, AIR["elite+adaptive"]], ids=["plain", "elite+adaptive"])
def test_text_prior_evicts_images_before_text(policy, air):
    cache = KVWindowCache(tiny_config(), window(policy, budget=64, n_sink=2, recent=8, **air))
    stream = FakeStream(cache)
    text_positions, pos = [], 0
    for i in range(30):
        if i % 3 == 0:
            stream.append(2)  # conversation text
            text_positions += [pos, pos + 1]
            pos += 2
        stream.append(16, Modality.IMAGE, torch.full((16,), float(i)))
        pos += 16
    assert len(text_positions) < 64 - 10
    for layer in cache.layers:
        for head in layer.position[0]:
            assert set(text_positions) <= set(head.tolist())
    if not air:
        assert cache.stats()["kept_by_modality"]["text"] == len(text_positions)


@pytest.mark.parametrize("policy", ["saddle", "sink-recent"])
def test_without_text_prior_text_is_not_protected(policy):
    cache = KVWindowCache(tiny_config(), window(policy, budget=64, n_sink=2, recent=8))
    stream = FakeStream(cache)
    for i in range(30):
        if i % 3 == 0:
            stream.append(2)
        stream.append(16, Modality.IMAGE, torch.full((16,), float(i)))
    assert cache.stats()["kept_by_modality"]["text"] < 20


ROPE_CASES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
}


@pytest.mark.parametrize("rope", list(ROPE_CASES))
@pytest.mark.parametrize("n", [50, 400], ids=["per-token angles", "table of the delta range"])
def test_rerotation_equals_rotation_at_shifted_position(rope, n):
    kw = {} if ROPE_CASES[rope] is None else {"rope_parameters": {"rope_theta": 10000.0, **ROPE_CASES[rope]}}
    cfg = tiny_config(**kw)
    rotary = LlamaRotaryEmbedding(cfg)
    k = torch.randn(1, 2, n, 16, generator=torch.Generator().manual_seed(3))
    p = torch.randint(0, 200, (n,), generator=torch.Generator().manual_seed(4))
    d = torch.randint(-150, 40, (n,), generator=torch.Generator().manual_seed(5)).clamp(min=-p)

    def at(pos):
        cos, sin = rotary(k, pos.unsqueeze(0))
        return apply_rotary_pos_emb(k, k, cos, sin)[1]

    moved = rotate(at(p), d.expand(1, 2, n), rope_inv_freq(cfg))
    torch.testing.assert_close(moved, at(p + d), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(at(p), at(p + d), atol=1e-3)  # the rotation did something
    half = rotate(at(p).bfloat16(), d.expand(1, 2, n), rope_inv_freq(cfg))  # math in float32, result in the keys' dtype
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), at(p + d), atol=0.05, rtol=0.02)


def test_one_delta_for_every_token_equals_the_same_delta_per_token():
    k = torch.randn(1, 2, 50, 16, generator=torch.Generator().manual_seed(8))
    inv_freq = rope_inv_freq(tiny_config())
    for shift in (-37, 5, 900):
        torch.testing.assert_close(rotate(k, shift, inv_freq), rotate(k, torch.full((1, 2, 50), shift), inv_freq))
    assert rotate(k, 0, inv_freq) is k


def test_partial_rotary_turns_the_first_dims_and_passes_the_rest_through():
    k = torch.randn(1, 2, 300, 16, generator=torch.Generator().manual_seed(6))
    d = torch.randint(-100, 0, (1, 2, 300), generator=torch.Generator().manual_seed(7))
    inv_freq = rope_inv_freq(tiny_config())[:4]  # 8 of the 16 dims rotate
    moved = rotate(k, d, inv_freq)
    assert torch.equal(moved[..., 8:], k[..., 8:])
    torch.testing.assert_close(moved[..., :8], rotate(k[..., :8].contiguous(), d, inv_freq))
    assert not torch.allclose(moved[..., :8], k[..., :8], atol=1e-3)


@pytest.mark.parametrize("policy", EVICTING)
@pytest.mark.parametrize("air", [{}, AIR["elite+adaptive"]], ids=["plain", "elite+adaptive"])
def test_stream_four_times_longer_than_positions(model, policy, air):
    cache = KVWindowCache(model.config, window(policy, budget=64, n_sink=4, recent=16, **air))
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for _ in range(4 * 256 // 32):
            logits = model(torch.randint(0, 128, (1, 32), generator=gen), past_key_values=cache).logits
            assert torch.isfinite(logits).all()
            assert max(cache.stats()["tokens_per_layer"]) + 32 < model.config.max_position_embeddings
    assert cache.stats()["seen_tokens"] == 4 * 256


@pytest.mark.parametrize("policy", EVICTING)
def test_without_window_attention_the_cache_stays_bounded(model, policy):
    """Another attention (plain SDPA) never scores the cache, but a stream past the budget still runs:
    each layer is cut once its attention is done, so the length the model reads for the next pass's
    positions and mask (layer 0's) is the length every layer hands to attention."""
    plain = LlamaForCausalLM(tiny_config()).eval()  # attn_implementation "sdpa": use_window_attention not called
    plain.load_state_dict(model.state_dict())
    cache = KVWindowCache(plain.config, window(policy, budget=64, n_sink=4, recent=16))
    gen = torch.Generator().manual_seed(10)
    with torch.no_grad():
        for _ in range(12):
            logits = plain(torch.randint(0, 128, (1, 20), generator=gen), past_key_values=cache).logits
            assert torch.isfinite(logits).all()
            assert cache.get_seq_length() <= 64
    cache.compress()  # the last layer's cut waits for the next pass, or for this call
    assert all(t <= 64 for t in cache.stats()["tokens_per_layer"])
    assert cache.stats()["seen_tokens"] == 12 * 20
    decoding = KVWindowCache(plain.config, window(policy, budget=32, n_sink=2, recent=8))
    with torch.no_grad():
        out = plain.generate(torch.randint(0, 128, (1, 10), generator=gen), past_key_values=decoding,
                             max_new_tokens=40, min_new_tokens=40, do_sample=False)  # random weights: no early EOS
    assert out.shape[1] == 50 and decoding.get_seq_length() <= 32


def test_without_window_attention_sink_recent_gives_the_same_logits(model):
    """sink-recent needs no scores, so plain SDPA and the kv_window attention must keep the same tokens."""
    plain = LlamaForCausalLM(tiny_config()).eval()
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 128, (1, 240), generator=torch.Generator().manual_seed(11))
    got = {}
    with torch.no_grad():
        for name, m in (("plain", plain), ("window", model)):
            cache = KVWindowCache(m.config, window("sink-recent", budget=64, n_sink=4, recent=16))
            got[name] = torch.cat([m(ids[:, i : i + 20], past_key_values=cache).logits for i in range(0, 240, 20)], 1)
    assert cache.stats()["evicted"] > 0
    torch.testing.assert_close(got["plain"], got["window"], atol=1e-5, rtol=0)


def test_generate_runs_past_the_budget(model):
    cache = KVWindowCache(model.config, window("combined", budget=32, n_sink=2, recent=8))
    with torch.no_grad():
        out = model.generate(torch.randint(0, 128, (1, 10)), past_key_values=cache, max_new_tokens=40,
                             do_sample=False)
    assert out.shape[1] == 50
    slack = cache.cfg.decode_slack
    assert slack == 2 and all(32 - slack <= t <= 32 for t in cache.stats()["tokens_per_layer"])


def test_decoding_compresses_once_per_slack():
    cache = KVWindowCache(tiny_config(), window("combined", budget=64, n_sink=2, recent=8, decode_slack=8))
    stream = FakeStream(cache)
    stream.append(70, Modality.IMAGE, torch.zeros(70))
    assert cache.stats()["tokens_per_layer"] == [64, 64]  # a chunk cuts to exactly the budget
    lengths = []
    for _ in range(20):
        stream.append(1, decode=True)
        lengths.append(cache.layers[0].get_seq_length())
    assert max(lengths) <= 64
    assert lengths[:10] == [56, 57, 58, 59, 60, 61, 62, 63, 64, 56]


@pytest.mark.parametrize("policy", ["sink-recent", "combined"])
@pytest.mark.parametrize("compiled", [True, False])
def test_decoding_appends_in_place_up_to_the_budget(policy, compiled):
    """After a cut, one-token appends go into the free slots of one store (no copy of the layer) until the
    budget is full; the step over it cuts into a fresh tensor. Tokens keep their values, views handed out
    earlier never change, and the bytes allocated never pass the budget's."""
    cache = KVWindowCache(tiny_config(), window(policy, budget=64, n_sink=2, recent=8, decode_slack=8,
                                                compiled=compiled))
    stream = FakeStream(cache)
    stream.append(70, Modality.IMAGE, torch.zeros(70))
    layer, handed, stores = cache.layers[0], [], []
    for _ in range(20):
        before = layer.values.clone()
        stream.append(1, decode=True)
        after = layer.values
        if after.shape[2] == before.shape[2] + 1:  # no cut this step: the old tokens, then the new one
            assert torch.equal(after[:, :, :-1], before)
        handed.append((after, after.clone()))
        stores.append(after.data_ptr())
        assert cache.kv_bytes() <= cache.budget_bytes()
    assert len(set(stores[1:9])) == 1  # 57 .. 64 tokens: one store
    assert stores[9] != stores[8] and stores[10] != stores[9]  # over the budget: cut; then a new store
    assert all(torch.equal(view, copy) for view, copy in handed)


def test_chunk_slack_compresses_every_other_chunk():
    cache = KVWindowCache(tiny_config(), window("combined", budget=64, n_sink=2, recent=8, chunk_slack=16))
    stream = FakeStream(cache)
    lengths, evicted = [], []
    for i in range(8):
        stream.append(16, Modality.IMAGE, torch.full((16,), float(i)))
        lengths.append(cache.layers[0].get_seq_length())
        evicted.append(cache.stats()["evicted"])
    assert lengths == [16, 32, 48, 64, 48, 64, 48, 64]  # cut to budget - slack, then one chunk fits
    assert len(set(evicted[4:])) == 2  # only every other chunk evicts
    assert all(t <= 64 for t in cache.stats()["tokens_per_layer"])


@pytest.mark.parametrize("max_gap", [16, None])
def test_gaps_left_open_give_the_same_logits_when_kept_tokens_are_contiguous(model, max_gap):
    """sink-recent without sinks keeps the latest tokens, so every kept key stands as far from every query
    with gaps left open (new keys moved by the layer's shift, queries by the attention) as with gaps closed
    at every cut: RoPE attention sees only distances. Chunks, then decoding past the decode slack."""
    ids = torch.randint(0, 128, (1, 300), generator=torch.Generator().manual_seed(12))
    got, gaps = {}, []
    with torch.no_grad():
        for gap in (0, max_gap):
            cache = KVWindowCache(model.config, window("sink-recent", budget=64, n_sink=0, recent=16, max_gap=gap))
            logits = [model(ids[:, i : i + 20], past_key_values=cache).logits for i in range(0, 240, 20)]
            for i in range(240, 300):
                logits.append(model(ids[:, i : i + 1], past_key_values=cache).logits)
                gaps.append(cache.layers[0].end - cache.layers[0].get_seq_length())
            got[gap] = torch.cat(logits, 1)
    assert cache.stats()["evicted"] > 0 and max(gaps) > 0  # gaps were left open for a while
    torch.testing.assert_close(got[max_gap], got[0], atol=2e-5, rtol=0)


@pytest.mark.parametrize("policy", EVICTING)
@pytest.mark.parametrize("air", [{}, AIR["elite+adaptive"]], ids=["plain", "elite+adaptive"])
def test_gaps_close_once_they_exceed_max_gap(policy, air):
    cache = KVWindowCache(tiny_config(), window(policy, budget=64, n_sink=4, recent=16, max_gap=40, **air))
    stream = FakeStream(cache)
    ends = []
    for i in range(40):
        stream.append(12, Modality.IMAGE, torch.full((12,), float(i)))
        for layer in cache.layers:
            t = layer.get_seq_length()
            assert 0 <= layer.end - t <= 40 + 12  # a cut leaves at most max_gap; an append adds its chunk
            rotary = layer.rotary[0]  # (H, T) each head's kept keys in stream order, at rising positions
            assert (rotary[:, 1:] > rotary[:, :-1]).all() and (rotary[:, -1] == layer.end - 1).all()
        ends.append(cache.layers[0].end)
    assert any(b < a for a, b in zip(ends, ends[1:]))  # closed at least once
    assert max(ends) > 64 + 12  # and open beyond the budget before that


def test_max_gap_stays_inside_the_model_positions():
    """Kept keys stay inside the model's 256 positions with room for a chunk of half the budget."""
    assert KVWindowCache(tiny_config(), window(budget=64, max_gap=None)).layers[0].max_gap == 64
    assert KVWindowCache(tiny_config(), window(budget=128, max_gap=None)).layers[0].max_gap == 64
    assert KVWindowCache(tiny_config(), window(budget=160, max_gap=None)).layers[0].max_gap == 16
    assert KVWindowCache(tiny_config(), window(budget=200, max_gap=None)).layers[0].max_gap == 0


def test_max_gap_flag():
    import argparse

    from streamer.options import add_cache_options, window_config

    p = argparse.ArgumentParser()
    add_cache_options(p)
    assert window_config(p.parse_args([])).max_gap == 0
    assert window_config(p.parse_args(["--max-gap", "2048"])).max_gap == 2048
    with pytest.raises(SystemExit):
        p.parse_args(["--max-gap", "-5"])


@pytest.mark.parametrize("mode", [m for m in MERGE_MODES if m != "none"])
def test_merge_keeps_count_and_moves_toward_evicted(mode):
    gen = torch.Generator().manual_seed(7)
    keep_k, keep_v = torch.randn(1, 2, 8, 16, generator=gen), torch.randn(1, 2, 8, 16, generator=gen)
    target = keep_k[:, :, 5:6]
    ev_k = target + 0.3 * torch.randn(1, 2, 3, 16, generator=gen)  # evicted keys close to kept token 5
    ev_v = torch.randn(1, 2, 3, 16, generator=gen)
    k, v, w = merge_into_kept(keep_k, keep_v, torch.ones(1, 2, 8), ev_k, ev_v, torch.ones(1, 2, 3), 0, mode)
    assert k.shape == keep_k.shape and v.shape == keep_v.shape
    center = ev_k.mean(dim=2)
    before = (keep_k[:, :, 5] - center).norm(dim=-1)
    after = (k[:, :, 5] - center).norm(dim=-1)
    assert (after < before).all()
    untouched = [i for i in range(8) if i != 5]
    torch.testing.assert_close(k[:, :, untouched], keep_k[:, :, untouched])
    assert torch.equal(w[:, :, 5], torch.full((1, 2), 4.0))


@pytest.mark.parametrize("window", [1, 4, 8])
def test_windowed_merge_picks_the_most_similar_key_of_its_window(window):
    gen = torch.Generator().manual_seed(3)
    k, e, n_fixed = 40, 12, 2
    keep_k, ev_k = torch.randn(1, 2, k, 16, generator=gen), torch.randn(1, 2, e, 16, generator=gen)
    ev_slot = torch.sort(torch.randint(0, k + 1, (1, 2, e), generator=gen), dim=-1).values
    best, target = nearest_kept(keep_k, ev_k, n_fixed, window, ev_slot)
    for head in range(2):
        for i in range(e):
            start = min(max(int(ev_slot[0, head, i]) - window // 2, n_fixed), k - window)
            cos = torch.nn.functional.cosine_similarity(keep_k[0, head, start:start + window], ev_k[0, head, i], dim=-1)
            assert int(target[0, head, i]) == start + int(cos.argmax())
            assert abs(float(best[0, head, i]) - float(cos.max())) < 1e-5
    full, wide = nearest_kept(keep_k, ev_k, n_fixed, None, None), nearest_kept(keep_k, ev_k, n_fixed, k, ev_slot)
    assert torch.equal(full[1], wide[1])  # a window that holds every candidate is the full search


@pytest.mark.parametrize("mode", [m for m in MERGE_MODES if m != "none"])
def test_merge_in_place_equals_a_fresh_result(mode):
    gen = torch.Generator().manual_seed(4)
    keep_k, keep_v = torch.randn(1, 2, 30, 16, generator=gen), torch.randn(1, 2, 30, 16, generator=gen)
    ev_k, ev_v = torch.randn(1, 2, 6, 16, generator=gen), torch.randn(1, 2, 6, 16, generator=gen)
    args = (torch.full((1, 2, 30), 2.0), ev_k, ev_v, torch.ones(1, 2, 6), 2, mode, 8,
            torch.tensor([1, 5, 9, 9, 20, 28]).expand(1, 2, 6))
    fresh = merge_into_kept(keep_k, keep_v, *args)
    k2, v2 = keep_k.clone(), keep_v.clone()
    merged = merge_into_kept(k2, v2, *args, in_place=True)
    assert not torch.equal(fresh[0], keep_k)  # merging changed something, and the inputs stayed as they were
    for a, b in zip(fresh, merged):
        torch.testing.assert_close(a, b)
    assert merged[0].data_ptr() == k2.data_ptr() and merged[1].data_ptr() == v2.data_ptr()


def test_merge_never_touches_sinks():
    keep_k = torch.randn(1, 1, 4, 8)
    ev_k = keep_k[:, :, :1].clone()  # identical to the sink
    k, _, _ = merge_into_kept(keep_k, keep_k, torch.ones(1, 1, 4), ev_k, ev_k, torch.ones(1, 1, 1), 1, "average")
    torch.testing.assert_close(k[:, :, 0], keep_k[:, :, 0])
    assert not torch.equal(k, keep_k)  # it merged into another token


# Fake queries carry no RoPE, and re-rotation turns kept keys, so crafted directions use the slowest
# rotary pair (dims 7 and 15 of 16): over a few hundred positions they turn by a few hundredths of a radian.


def _query_toward(direction: torch.Tensor, n: int) -> torch.Tensor:
    return (8.0 * direction).expand(1, 4, n, 16).clone()


def test_crafted_saddle_is_kept():
    cache = KVWindowCache(tiny_config(), window("saddle", budget=32, n_sink=2, recent=6, score_decay=1.0))
    stream = FakeStream(cache, seed=8)
    hot = torch.zeros(16)
    hot[SLOW_A] = 1.0
    stream.append(10)
    stream.append(1, keys=(4.0 * hot).expand(1, 2, 1, 16).clone())  # stream position 10: the saddle
    for _ in range(30):
        stream.append(8, query=_query_toward(hot, 8))
    for layer in cache.layers:
        assert (layer.position == 10).any(dim=-1).all()  # kept in every head


def test_score_decay_lets_newer_saddle_displace_older():
    def run(decay: float) -> tuple[bool, bool]:
        cache = KVWindowCache(tiny_config(), window("saddle", budget=16, n_sink=2, recent=4, score_decay=decay,
                                                    obs_window=4))
        stream = FakeStream(cache, seed=9)
        a, b = torch.zeros(16), torch.zeros(16)
        a[SLOW_A], b[SLOW_B] = 1.0, 1.0
        stream.append(4)
        stream.append(1, keys=(4.0 * a).expand(1, 2, 1, 16).clone())  # position 4: old saddle
        for _ in range(20):  # early rounds: the conversation is about A
            stream.append(4, query=_query_toward(a, 4))
        stream.append(1, keys=(4.0 * b).expand(1, 2, 1, 16).clone())  # position 85: new saddle
        for _ in range(20):  # later rounds: about B, with a weak pull to A
            stream.append(4, query=_query_toward(b, 4))
        pos = cache.layers[0].position
        return bool((pos == 4).any()), bool((pos == 85).any())

    # the budget has one slot beyond sinks + recent + the stream's spare tokens: A and B compete for it
    assert run(0.5) == (False, True)
    assert run(1.0)[0]  # without decay the old saddle's accumulated score keeps it


def test_stats_report_modalities_times_and_bytes():
    cache = KVWindowCache(tiny_config(), window("combined", budget=48, n_sink=2, recent=8))
    stream = FakeStream(cache)
    stream.append(5)
    for t in range(10):
        stream.append(6, Modality.IMAGE, torch.full((6,), float(t)))
    s = cache.stats()
    assert s["tokens_per_layer"] == [48, 48]
    assert s["kv_bytes"] == 2 * 2 * 48 * 16 * 2 * 4 == s["budget_bytes"]
    assert s["kept_by_modality"]["text"] == 5 and s["kept_by_modality"]["image"] == 43
    assert s["video_times"][-1] == 9.0 and len(s["video_times"]) <= 10
    assert s["next_position"] == 48
    cache.reset()
    assert cache.stats()["kv_tokens"] == 0 and cache.stats()["seen_tokens"] == 0


@pytest.mark.parametrize("kw,msg", [
    ({"policy": "nope"}, "unknown policy"),
    ({"budget": 4}, "budget"),
    ({"budget": None}, "needs a budget"),
    ({"budget": 64, "n_sink": 40, "recent": 40}, "must fit"),
    ({"merge": "blend"}, "unknown merge"),
    ({"score_decay": 0.0}, "score_decay"),
    ({"evict_per": "token"}, "evict_per"),
    ({"budget": 64, "decode_slack": 60}, "decode_slack"),
    ({"budget": 64, "chunk_slack": 60}, "chunk_slack"),
    ({"budget": 64, "chunk_slack": -1}, "chunk_slack"),
    ({"budget": 64, "max_gap": -1}, "max_gap"),
])
def test_config_errors_are_clear(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        WindowConfig(**kw)


def test_budget_must_fit_model_positions():
    with pytest.raises(ConfigError, match="positions"):
        KVWindowCache(tiny_config(), WindowConfig(budget=512))


def test_tags_must_line_up():
    cache = KVWindowCache(tiny_config(), window())
    with pytest.raises(ValueError):
        cache.tag([0, 1, 1], [math.nan, 1.0])


def test_hand_filled_cache_does_not_score_another_cache(model):
    """update() by hand leaves a layer in the attention's slot; a later pass over another cache must run as
    plain attention and leave that layer alone (it used to score the other cache's keys)."""
    cache = KVWindowCache(model.config, window("combined", budget=32, n_sink=2, recent=8))
    kv = torch.randn(1, 2, 40, 16, generator=torch.Generator().manual_seed(12))
    for i in range(2):
        cache.update(kv, kv, i)
    scores = cache.layers[1].acc.clone()
    ids = torch.randint(0, 128, (1, 20), generator=torch.Generator().manual_seed(13))
    plain = LlamaForCausalLM(tiny_config()).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        got = model(ids, past_key_values=DynamicCache()).logits
        ref = plain(ids, past_key_values=DynamicCache()).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert torch.equal(cache.layers[1].acc, scores)


def test_text_prior_keeps_the_most_attended_text():
    """Under the text prior, text tokens still compete by score among themselves (a fixed 1e9 bonus used to
    round every text score to one float32 value, so which text survived was arbitrary)."""
    from streamer.kv_scoring import keep_priority

    scores = torch.tensor([[[0.0, 0.0, 5.0, 0.1, 3.0, 0.2, 0.0, 0.0]]])
    is_text = torch.tensor([[[True, True, True, True, False, True, True, True]]])
    prio = keep_priority(scores, is_text, n_sink=1, recent=1, text_prior=True)
    order = prio[0, 0, 1:-1].argsort(descending=True, stable=True).tolist()  # positions 1..6
    assert [i + 1 for i in order] == [2, 5, 3, 1, 6, 4]  # text by score (5 > 0.2 > 0.1 > 0), then the image
