"""`recency`: the newest tokens are kept (with the sinks: StreamingLLM, arXiv 2309.17453)."""

from dataclasses import dataclass

import torch

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class Recency(Scorer):
    name = "recency"

    def score(self, layer, acc):
        t = layer.keys.shape[2]
        return torch.arange(t, dtype=torch.float32, device=layer.keys.device).expand(layer.keys.shape[:3])
