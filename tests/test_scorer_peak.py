"""`peak`: a token's strongest moment counts, not how many passes saw it: one sharp look outranks many faint
ones (which summed attention ranks the other way)."""

import torch


def test_peak_keeps_the_token_seen_sharply_once(one_layer):
    kept = {}
    for spec in ("peak", "attention"):
        c = one_layer(spec, budget=8, n_sink=1, recent=2, obs_window=4)
        keys = c.randn(20) * 0.1
        keys[:, :, 3, 0] = 2.0  # faintly attended by every pass
        keys[:, :, 5, 1] = 8.0  # sharply attended by one pass
        q = torch.zeros(1, 4, 20, 16)
        q[..., 0] = 0.6
        q[:, :, -1, 1] = 2.0
        c.append(keys=keys, query=q)
        for _ in range(8):  # later passes: faint looks at token 3 only
            k = c.randn(2) * 0.1
            q = torch.zeros(1, 4, 2, 16)
            q[..., 0] = 0.6
            layer = c.append(keys=k, query=q)
        kept[spec] = set(layer.position[0, 0].tolist())
    assert 5 in kept["peak"]
    assert 3 in kept["attention"]
