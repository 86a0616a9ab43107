"""`keydiff`: minus the cosine of each key with the mean of the head's normalised keys (KeyDiff, arXiv
2504.15364: keys unlike the rest are kept, so the kept set stays diverse)."""

from dataclasses import dataclass

import torch

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class KeyDiff(Scorer):
    name = "keydiff"

    def score(self, layer, acc):
        keys = torch.nn.functional.normalize(layer.keys.float(), dim=-1)  # (B, H, T, D)
        anchor = torch.nn.functional.normalize(keys.mean(dim=2, keepdim=True), dim=-1)  # (B, H, 1, D)
        return -(keys * anchor).sum(dim=-1)
