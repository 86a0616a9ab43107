"""Scorers of the bounded cache: each gives every held token a score (B, H, T), higher = keep.

A scorer is one small frozen dataclass in a file of its own (the way kvpress writes presses); the
cache's other parts (sinks and the recent window, the Inf-MLLM decay, the LOOK-M text prior, the
redundancy signal, pooling, merging) are settings of the composition (`kv_config.Composition`) and
apply to whatever the scorers say. Adding a scorer: a file here with a `Scorer` subclass, its name in
`SCORERS` below, and a test file `tests/test_scorer_<name>.py`.

| name        | score of a held token                                              | from                 |
|-------------|--------------------------------------------------------------------|----------------------|
| `recency`   | its stream order (newest kept): StreamingLLM with the sinks        | 2309.17453           |
| `attention` | attention of each pass's last `obs_window` queries, accumulated     | Inf-MLLM, H2O        |
| `tova`      | attention of the latest pass's last query (not accumulated)        | TOVA 2401.06104      |
| `proxy`     | attention of the proxy queries (the family's assistant opening)     | StreamMem 2508.15717 |
| `knorm`     | minus the norm of its key                                          | 2406.11430           |
| `vnorm`     | the norm of its value                                              | InfiniPot-V          |
| `keydiff`   | minus the cosine of its key with the mean normalised key           | KeyDiff 2504.15364   |
| `novelty`   | minus its value's highest cosine with any other held value         | this project         |
| `peak`      | the highest attention it ever received from an observation query    | H2O-style, max       |

Several scorers in one composition are averaged as ranks (each head's tokens ranked 0..1 per scorer),
so scores on different scales combine; one scorer's score is used as it is. A scorer may rank only the
conversation text or only the frame tokens (`knorm@text`, `attention@frames`): each class of tokens is then
ranked 0..1 by the scorers that apply to it (meant with the `prior` part, which puts text above frames).
Deliberately not here: the cut itself (`kv_layer.py`), the keep priority (`kv_scoring.keep_priority`).
"""

import torch

from streamer.kv_scorers.attention import Attention
from streamer.kv_scorers.base import Scorer
from streamer.kv_scorers.keydiff import KeyDiff
from streamer.kv_scorers.knorm import KNorm
from streamer.kv_scorers.novelty import Novelty
from streamer.kv_scorers.peak import Peak
from streamer.kv_scorers.proxy import Proxy
from streamer.kv_scorers.recency import Recency
from streamer.kv_scorers.tova import Tova
from streamer.kv_scorers.vnorm import VNorm

SCORERS: dict[str, type[Scorer]] = {s.name: s for s in (Recency, Attention, Tova, Proxy, KNorm, VNorm, KeyDiff, Novelty, Peak)}

__all__ = ["SCORERS", "SCOPES", "Scorer", "combine", "combine_scoped"]
SCOPES = ("all", "text", "frames")


def combine(scores: list[torch.Tensor], union: bool = False) -> torch.Tensor:
    """One score (B, H, T) from several: the scores themselves for one, else the mean of their ranks
    (0 for each head's lowest token, 1 for its highest) so that scales do not matter; `union`: the highest of
    their ranks (a token any scorer ranks high is kept: the budget is shared between the scorers' favourites)."""
    if len(scores) == 1:
        return scores[0]
    t = scores[0].shape[-1]
    ranks = torch.stack([s.float().argsort(dim=-1).argsort(dim=-1).float() / max(t - 1, 1) for s in scores])
    return ranks.amax(dim=0) if union else ranks.mean(dim=0)


def _rank_within(score: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Ranks (B, H, T) 0..1 of `score` among each head's tokens where `member` (B, H, T) is True (others: 0)."""
    n_in = member.sum(dim=-1, keepdim=True)  # (B, H, 1)
    masked = score.float().masked_fill(~member, float("-inf"))
    rank = masked.argsort(dim=-1).argsort(dim=-1).float() - (member.shape[-1] - n_in)  # members: 0 .. n_in - 1
    return (rank / (n_in - 1).clamp(min=1)).masked_fill(~member, 0.0)


def combine_scoped(scorers, scores: list[torch.Tensor], is_text: torch.Tensor, union: bool = False) -> torch.Tensor:
    """One score (B, H, T) from scorers of which some rank only text or only frames (`Scorer.scope`).
    is_text: (B, H, T) bool. Unscoped: `combine`. Scoped: each class ranked 0..1 by the scorers that apply to
    it (a class no scorer applies to scores 0)."""
    if all(s.scope == "all" for s in scorers):
        return combine(scores, union)
    out = torch.zeros_like(scores[0], dtype=torch.float32)
    for cls, member in (("text", is_text), ("frames", ~is_text)):
        mine = [x for s, x in zip(scorers, scores) if s.scope in ("all", cls)]
        if mine:
            out = torch.where(member, _rank_within(combine(mine, union), member), out)
    return out
