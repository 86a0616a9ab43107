"""Weights a model's standing questions run with: low-rank deltas on some of its linear layers, on only in
standing-question passes.

A standing question ("Is the digit 7 on screen?", `streamer.watch`) is asked aside after every chunk and
taken back, so the tokens it runs through the model never enter the cache that the stream and the chat
read. Its passes can therefore use weights of their own without changing anything else: `tiny` keeps the
weights its chat was trained with for the stream and the chat, and adds a presence adapter trained for
standing questions only (docs/training.md, stage PW). `WatchDelta` holds such deltas, W x + B (A x) for
each adapted layer, as forward hooks that add nothing unless `on()` is active in the calling thread (a
server runs other sessions' passes on other threads meanwhile).

Deliberately not here: when a pass is a standing question's (`streamer.watch`), training the deltas
(train/train_watch.py), where they are stored (`streamer.models.tiny`).
"""

from __future__ import annotations

import contextlib
import threading

import torch

from streamer.errors import ModelLoadError

PREFIX = "watch."  # "watch.<linear weight key>.A" (r, in), already scaled, and ".B" (out, r) in a weights file


def factors_of(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{weight key: (A, B)} from a weights file's "watch.<key>.A"/".B" tensors (the others are ignored)."""
    keys = [k[len(PREFIX):-2] for k in state if k.startswith(PREFIX) and k.endswith(".A")]
    return {k: (state[f"{PREFIX}{k}.A"], state[f"{PREFIX}{k}.B"]) for k in keys}


def state_of(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The inverse of `factors_of`: float32 "watch.<key>.A"/".B" tensors to store."""
    return {f"{PREFIX}{key}.{name}": t.detach().float().contiguous()
            for key, ab in factors.items() for name, t in zip("AB", ab)}


class WatchDelta:
    """Low-rank deltas {weight key: (A (r, in), B (out, r))} on `model`'s linear layers, added only inside `on()`."""

    def __init__(self, model: torch.nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._local = threading.local()
        modules = dict(model.named_modules())
        param = next(model.parameters())
        self.factors = {}
        for key, (a, b) in factors.items():
            module = modules.get(key.removesuffix(".weight"))
            if not isinstance(module, torch.nn.Linear) or a.shape[1] != module.in_features \
                    or b.shape != (module.out_features, a.shape[0]):
                raise ModelLoadError(f"the standing-question weights do not fit the model at {key!r}")
            a, b = a.to(param.device, param.dtype), b.to(param.device, param.dtype)
            self.factors[key] = (a, b)
            module.register_forward_hook(self._hook(a, b))

    @classmethod
    def from_file(cls, model: torch.nn.Module, path) -> WatchDelta | None:
        """From the "watch." tensors of a weights file (only those are read); None when it has none."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            factors = factors_of({k: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)})
        return cls(model, factors) if factors else None

    def _hook(self, a: torch.Tensor, b: torch.Tensor):
        def hook(module, args, out):
            if getattr(self._local, "on", False):
                return out + (args[0] @ a.t()) @ b.t()
            return None
        return hook

    @contextlib.contextmanager
    def on(self):
        """The deltas apply to the passes this thread runs inside."""
        before = getattr(self._local, "on", False)
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = before
