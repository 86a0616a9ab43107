"""`recency` (sink-recent): the sinks and the newest tokens are kept, whatever the keys and attention."""


def test_recency_keeps_sinks_and_the_newest(one_layer):
    c = one_layer("recency", budget=20, n_sink=3, recent=2)
    for _ in range(5):
        layer = c.append(n=17)
    assert layer.position[0, 0].tolist() == [0, 1, 2] + list(range(85 - 17, 85))
