"""`tova`: only the latest pass's last query decides (not accumulated, not the earlier queries)."""

import torch


def test_tova_follows_the_last_query_only(one_layer):
    c = one_layer("tova", budget=8, n_sink=1, recent=2, obs_window=8)
    keys = c.randn(30) * 0.1
    keys[:, :, 4, 0] = 6.0  # the early queries' favourite
    keys[:, :, 7, 1] = 6.0  # the last query's favourite
    q = torch.zeros(1, 4, 30, 16)
    q[:, :, :-1, 0] = 3.0
    q[:, :, -1, 1] = 3.0
    q[:, :, -1, 0] = -3.0  # and looks away from the early favourite
    layer = c.append(keys=keys, query=q)
    kept = layer.position[0, 0].tolist()
    assert 7 in kept and 4 not in kept
    c2 = one_layer("attention", budget=8, n_sink=1, recent=2, obs_window=8)
    assert 4 in c2.append(keys=keys, query=q).position[0, 0].tolist()  # summed attention keeps the other
