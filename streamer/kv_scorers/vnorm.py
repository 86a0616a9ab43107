"""`vnorm`: the L2 norm of each value (InfiniPot-V's value-norm signal: a value of small norm adds
little to any attention output)."""

from dataclasses import dataclass

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class VNorm(Scorer):
    name = "vnorm"

    def score(self, layer, acc):
        return layer.values.float().norm(dim=-1)
