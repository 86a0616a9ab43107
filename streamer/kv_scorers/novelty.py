"""`novelty`: minus the highest cosine similarity of each token's value with the value of any other held token
of its head: what repeats (the same words said again, a template line of a log, a caption seen before) ranks
low, what is said once ranks high. Values carry no RoPE, so a repeat far away in the stream still matches.
The text analogue of the frame redundancy signal; O(T^2 D) per head at each cut."""

from dataclasses import dataclass

import torch

from streamer.kv_scorers.base import Scorer


@dataclass(frozen=True)
class Novelty(Scorer):
    name = "novelty"

    def score(self, layer, acc):
        v = torch.nn.functional.normalize(layer.values.float(), dim=-1)  # (B, H, T, D)
        sim = v @ v.transpose(-1, -2)  # (B, H, T, T)
        sim.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
        return -sim.amax(dim=-1)
