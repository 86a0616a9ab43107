"""`attention` (the saddle scorer): the tokens the last queries attend to most are kept; with `decay`, old
attention fades so that newer attention wins."""

import torch


def test_attention_keeps_the_most_attended_token(one_layer):
    c = one_layer("attention", budget=16, n_sink=2, recent=4)
    keys = c.randn(40) * 0.1
    hot = torch.zeros(16)
    hot[0] = 1.0
    keys[:, :, 9] = 6 * hot
    query = torch.zeros(1, 4, 40, 16)
    query[..., 0] = 4.0  # every query looks at key 9
    layer = c.append(keys=keys, query=query)
    assert 9 in layer.position[0, 0].tolist() and 9 in layer.position[0, 1].tolist()


def test_decay_lets_new_attention_overtake_old(one_layer):
    kept = {}
    for spec in ("attention", "attention+decay"):
        c = one_layer(spec, budget=12, n_sink=1, recent=2, score_decay=0.3)
        a, b = torch.zeros(16), torch.zeros(16)
        a[0], b[1] = 5.0, 5.0
        keys = c.randn(20) * 0.1
        keys[:, :, 5] = a
        q = torch.zeros(1, 4, 20, 16)
        q[..., 0] = 3.0
        c.append(keys=keys, query=q)  # position 5 gathers a lot of attention now
        for step in range(6):  # later chunks attend a little to a new token at 20
            keys = c.randn(4) * 0.1
            if step == 0:
                keys[:, :, 0] = b
            q = torch.zeros(1, 4, 4, 16)
            q[..., 1] = 1.2
            layer = c.append(keys=keys, query=q)
        kept[spec] = set(layer.position[0, 0].tolist())
    assert kept["attention"] != kept["attention+decay"]
    assert 20 in kept["attention+decay"]
