"""`keydiff`: keys unlike the rest (lowest cosine with the mean normalised key) are kept."""

import torch


def test_keydiff_keeps_the_odd_keys_out(one_layer):
    c = one_layer("keydiff", budget=16, n_sink=2, recent=4)
    common = torch.randn(16, generator=torch.Generator().manual_seed(4))
    keys = common + 0.1 * c.randn(40)  # all alike ...
    odd = [7, 19, 23]
    keys[:, :, odd] = -common + 0.1 * c.randn(3)  # ... but three
    layer = c.append(keys=keys)
    kept = layer.position[0].tolist()
    for head in kept:
        assert set(odd) <= set(head)
