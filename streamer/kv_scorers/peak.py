"""`peak`: the highest attention a token has received from any observation query of any pass (H2O-style
heavy hitters by their strongest moment, not their sum): a token that was once the focus keeps its rank, and
old tokens gain nothing from having been seen by more passes (summed attention's age bias)."""

from dataclasses import dataclass

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class Peak(Scorer):
    name = "peak"
    observes = "chunk"

    def observe(self, acc, probs):
        return acc.maximum(probs.amax(dim=(2, 3)))  # (B, H, T): over query heads and queries

    def score(self, layer, acc):
        return acc
