"""`attention`: the attention each token receives from the last `obs_window` queries of every pass,
summed over those queries and the query heads of its KV head, accumulated over passes (the Inf-MLLM
"attention saddles"; with the composition's `decay`, older attention fades: Inf-MLLM's bias)."""

from dataclasses import dataclass

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class Attention(Scorer):
    name = "attention"
    observes = "chunk"

    def score(self, layer, acc):
        return acc
