"""`knorm`: the keys of least norm are kept (and re-rotation does not change what it keeps)."""

import torch


def test_knorm_keeps_the_lowest_norm_keys(one_layer):
    c = one_layer("knorm", budget=24, n_sink=2, recent=4)
    keys = c.randn(60)
    scale = torch.linspace(3.0, 0.5, 60)  # norms fall along the stream, with a few small ones early
    scale[[10, 11, 12]] = 0.05
    keys = torch.nn.functional.normalize(keys, dim=-1) * scale.view(1, 1, -1, 1)
    layer = c.append(keys=keys)
    kept = set(layer.position[0, 0].tolist())
    evictable = [i for i in range(2, 56)]
    want = sorted(evictable, key=lambda i: float(scale[i]))[: 24 - 2 - 4]
    assert kept == set(range(2)) | set(range(56, 60)) | set(want)
    assert {10, 11, 12} <= kept
