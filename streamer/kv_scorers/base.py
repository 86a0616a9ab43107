"""The scorer interface: what every file of `kv_scorers` implements."""

from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass(frozen=True)
class Scorer:
    """Gives each held token of a layer a score (B, H, T); higher = keep.

    A scorer that `observes` keeps one accumulator per token (B, H, T) in the layer, which follows the
    tokens through every cut (the Inf-MLLM decay multiplies it there): `observe` turns one pass's
    attention into the new accumulator. `observes` says which queries it wants: "chunk" (the last
    `obs_window` queries of each forward pass) or "probe" (the proxy queries appended to a pass,
    `KVWindowCache.tag(probe=...)`, never kept). A scorer that observes nothing scores from the layer's
    keys and values at the cut.
    """

    name: ClassVar[str]
    observes: ClassVar[str | None] = None  # None | "chunk" | "probe"
    scope: str = "all"  # which tokens it ranks: "all", "text" (conversation text) or "frames" (spec: `knorm@text`)

    @property
    def spec(self) -> str:
        return self.name if self.scope == "all" else f"{self.name}@{self.scope}"

    def observe(self, acc: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """acc (B, H, T) accumulated so far (0 for the newest tokens); probs (B, H, G, W, T) the attention of
        W observation queries (G query heads per KV head) over the held tokens. Returns the new acc."""
        return acc + probs.sum(dim=(2, 3))

    def score(self, layer, acc: torch.Tensor | None) -> torch.Tensor:
        """(B, H, T) score of each token `layer` holds (`layer.keys`, `layer.values`: (B, H, T, D));
        acc: this scorer's accumulator when it observes."""
        raise NotImplementedError
