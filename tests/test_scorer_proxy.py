"""`proxy`: proxy queries appended to a pass score the held tokens, then leave: no proxy token stays in the
cache, no kept key or value changes because of them, and the budget holds."""

import torch


def test_proxy_tokens_score_then_leave_no_trace(one_layer):
    gen = torch.Generator().manual_seed(5)
    keys, values = torch.randn(1, 2, 40, 16, generator=gen) * 0.1, torch.randn(1, 2, 40, 16, generator=gen)
    keys[:, :, 11, 2] = 6.0  # what the proxy looks at
    q = torch.randn(1, 4, 40, 16, generator=gen) * 0.1
    probe_k, probe_v = torch.randn(1, 2, 3, 16, generator=gen), torch.randn(1, 2, 3, 16, generator=gen)
    probe_q = torch.zeros(1, 4, 3, 16)
    probe_q[..., 2] = 3.0
    with_probe = one_layer("proxy", budget=12, n_sink=1, recent=2)
    layer = with_probe.append(keys=torch.cat([keys, probe_k], 2), values=torch.cat([values, probe_v], 2),
                              query=torch.cat([q, probe_q], 2), probe=3)
    assert layer.get_seq_length() == 12 and layer.n_seen == 40 and layer.end == 12
    kept = layer.position[0, 0]
    assert 11 in kept.tolist() and int(kept.max()) < 40  # scored by the probe; no probe token kept
    for v in layer.values[0, 0]:  # every kept value is one of the chunk's, unchanged (no merge)
        assert any(torch.equal(v, w) for w in values[0, 0])
    plain = one_layer("proxy", budget=12, n_sink=1, recent=2)  # no probe: the chunk's own queries score nothing
    layer2 = plain.append(keys=keys, values=values, query=q)
    assert layer2.get_seq_length() == 12 and not layer2.acc.any()


def test_a_probe_never_changes_the_chunk_it_follows(one_layer):
    """The same stream with and without probes keeps the same values for a scorer that ignores them."""
    runs = []
    for probe in (0, 2):
        c = one_layer("knorm", budget=16, n_sink=1, recent=2)
        gen = torch.Generator().manual_seed(6)
        for _ in range(4):
            k, v = torch.randn(1, 2, 10, 16, generator=gen), torch.randn(1, 2, 10, 16, generator=gen)
            if probe:
                k = torch.cat([k, torch.randn(1, 2, probe, 16)], 2)
                v = torch.cat([v, torch.randn(1, 2, probe, 16)], 2)
            layer = c.append(keys=k, values=v, n=10 + probe, probe=probe)
        runs.append((layer.values.clone(), layer.position.clone(), layer.end))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1]) and runs[0][2] == runs[1][2]
