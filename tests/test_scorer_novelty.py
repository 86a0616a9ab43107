"""`novelty`: values that repeat elsewhere in the cache go first; a value said once stays."""

import torch


def test_novelty_keeps_what_is_said_once(one_layer):
    c = one_layer("novelty", budget=12, n_sink=1, recent=2)
    gen = torch.Generator().manual_seed(8)
    phrases = torch.randn(1, 2, 4, 16, generator=gen)  # four "phrases" said again and again
    values = phrases[:, :, torch.arange(40) % 4] + 0.01 * torch.randn(1, 2, 40, 16, generator=gen)
    once = [9, 22, 30]
    values[:, :, once] = torch.randn(1, 2, 3, 16, generator=gen)  # said once
    layer = c.append(values=values)
    for head in layer.position[0].tolist():
        assert set(once) <= set(head)
