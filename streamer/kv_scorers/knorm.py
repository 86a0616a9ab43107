"""`knorm`: minus the L2 norm of each key (arXiv 2406.11430: low-norm keys draw high attention).
RoPE turns keys without changing their norm, so re-rotation never changes this score."""

from dataclasses import dataclass

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class KNorm(Scorer):
    name = "knorm"

    def score(self, layer, acc):
        return -layer.keys.float().norm(dim=-1)
