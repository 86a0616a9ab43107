"""The compiled CPU cut (`kv_cut.CompiledCut`: `kv_kernels.keep_rows`, `cut_kv`) against the tensor-operation path
(`kv_cut.TensorCut`) it replaces."""

import pytest
import torch
from transformers import LlamaForCausalLM

from streamer.kv_cut import CompiledCut, TensorCut
from streamer.kv_kernels import TurnTable
from streamer.kv_merge import MERGE_MODES
from streamer.kv_window import KVWindowCache, use_window_attention
from conftest import VARIANTS, stream_frames, tiny_config, window

EVICTING_VARIANTS = [v for v in VARIANTS if v[0] != "full"]


@pytest.mark.parametrize("policy,merge", EVICTING_VARIANTS)
@pytest.mark.parametrize("max_gap", [0, None])
@pytest.mark.parametrize("rotary", [1.0, 0.5])
def test_compiled_cut_equals_the_tensor_path(policy, merge, max_gap, rotary):
    config = tiny_config(partial_rotary_factor=rotary, head_dim=16)
    caches = [KVWindowCache(config, window(policy, merge, budget=48, max_gap=max_gap, compiled=c)) for c in (True, False)]
    for cache in caches:
        stream_frames(cache, torch.Generator().manual_seed(5), chunks=6, n=30, heads=2, dim=16)
    fast, slow = caches
    for a, b in zip(fast.layers, slow.layers):
        assert a.keys.shape == b.keys.shape and a.get_seq_length() <= 48
        torch.testing.assert_close(a.keys, b.keys, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(a.values, b.values, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(a.weight, b.weight)
        assert isinstance(a.cut, CompiledCut) and type(b.cut) is TensorCut
        for tag in ("position", "rotary", "acc", "modality"):
            assert torch.equal(getattr(a, tag), getattr(b, tag)), tag
        torch.testing.assert_close(a.similar, b.similar)  # from appended values that came from the cut, to rounding
        assert torch.equal(a.times.nan_to_num(-1), b.times.nan_to_num(-1))
    assert fast.layers[0].n_evicted > 0


@pytest.mark.parametrize("merge", MERGE_MODES)
def test_compiled_cut_gives_the_same_logits(merge):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config()).eval()
    use_window_attention(model)
    ids = torch.randint(0, 128, (1, 200), generator=torch.Generator().manual_seed(1))
    logits = []
    for compiled in (True, False):
        cache = KVWindowCache(model.config, window("combined", merge, budget=40, compiled=compiled))
        with torch.no_grad():
            for start in range(0, 200, 25):
                out = model(ids[:, start:start + 25], past_key_values=cache, use_cache=True)
        logits.append(out.logits)
    torch.testing.assert_close(logits[0], logits[1], atol=1e-4, rtol=1e-4)


def test_turn_table_rows_rotate_by_minus_their_index():
    inv = torch.tensor([1.0, 0.1])
    rows = TurnTable(inv).down_to(-3)
    assert rows.shape[0] >= 4
    angles = torch.tensor([[0.0, 0.0], [-1.0, -0.1], [-2.0, -0.2], [-3.0, -0.3]])
    torch.testing.assert_close(rows[:4], torch.cat((angles.cos(), angles.sin()), dim=-1))
