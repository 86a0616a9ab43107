"""`tova`: the attention of the latest pass's last query, averaged over the query heads of each KV head;
replaced (not accumulated) at every pass (TOVA, arXiv 2401.06104)."""

from dataclasses import dataclass

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class Tova(Scorer):
    name = "tova"
    observes = "chunk"

    def observe(self, acc, probs):
        return probs[:, :, :, -1].mean(dim=2)  # (B, H, T): the last query only

    def score(self, layer, acc):
        return acc
