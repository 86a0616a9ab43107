"""Model adapters: turn video frames and questions into inputs of a vision-language model.

Public surface: `load_model(name_or_path, device, dtype)`, `list_builtin()`, and the `ModelAdapter`
/ `Prompt` types (see base.py and prompt.py). One file per model family.
"""

from streamer.models.base import ModelAdapter
from streamer.vocab import Prompt
from streamer.models.registry import list_builtin, load_model

__all__ = ["ModelAdapter", "Prompt", "list_builtin", "load_model"]
