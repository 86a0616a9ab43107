"""`vnorm`: the values of largest norm are kept."""

import torch


def test_vnorm_keeps_the_largest_values(one_layer):
    c = one_layer("vnorm", budget=20, n_sink=2, recent=4)
    scale = torch.rand(50, generator=torch.Generator().manual_seed(3)) + 0.1
    values = torch.nn.functional.normalize(c.randn(50), dim=-1) * scale.view(1, 1, -1, 1)
    layer = c.append(values=values)
    want = sorted(range(2, 46), key=lambda i: -float(scale[i]))[:14]
    assert set(layer.position[0, 0].tolist()) == set(range(2)) | set(range(46, 50)) | set(want)
