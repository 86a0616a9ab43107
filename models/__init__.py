"""Model adapters: turn video frames and questions into inputs of a vision-language model.

Public surface: `load_model(name_or_path, device, dtype)`, `list_builtin()`, and the `ModelAdapter`
/ `Prompt` types (base.py; `Prompt` lives in streamer/shared_types.py, shared with the cache). One file per model family. Importing this package loads
nothing heavy: each name is imported on first use (the CLI reads its options before torch loads).
"""

import importlib

__all__ = ["ModelAdapter", "Prompt", "list_builtin", "load_model"]
_HOME = {"ModelAdapter": "streamer.models.base", "Prompt": "streamer.shared_types",
         "list_builtin": "streamer.models.registry", "load_model": "streamer.models.registry"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
