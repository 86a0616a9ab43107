"""`load_model`: a built-in name, a hub id or a local checkpoint directory -> a ready `ModelAdapter`.

Resolution order for `name_or_path`:
1. a built-in name (`list_builtin()`): built in-process, no files needed;
2. an existing local directory: its config.json picks the family by `model_type`;
3. a hub id ("owner/name"): the same, through the hub (or the local hub cache when the hub cannot be
   reached: a 3-second reachability probe avoids transformers' ~25 s of retries when offline).
Anything that cannot be loaded raises ONE `ModelLoadError` whose message names `--model PATH` and the
built-in names; unsupported settings raise `ConfigError`.

Deliberately not here: how a family writes prompts (one file per family) or runs.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import torch

from streamer.models.base import ModelAdapter
from streamer.models.llava_onevision import LlavaOnevisionAdapter
from streamer.models.qwen_vl import Qwen3VLAdapter, QwenVLAdapter
from streamer.models.runtime import LoadSettings, make_fast
from streamer.models.smolvlm import SmolVLMAdapter
from streamer.errors import ModelLoadError, first_line

logger = logging.getLogger(__name__)

# built-in name -> (module, function(device, dtype) -> ModelAdapter), imported on first use; no files needed
_BUILTINS: dict[str, tuple[str, str]] = {
    "tiny-random": ("streamer.models.tiny_random", "build_tiny_random"),  # random SmolVLM, answers are noise
    "tiny-random-llava": ("streamer.models.tiny_random", "build_tiny_random_llava"),  # random LLaVA-OneVision
    "tiny-random-qwen": ("streamer.models.tiny_random", "build_tiny_random_qwen"),  # random Qwen2.5-VL (M-RoPE)
    "tiny-random-qwen3": ("streamer.models.tiny_random", "build_tiny_random_qwen3"),  # random Qwen3-VL
    # SmolLM2-135M-Instruct + a small vision tower trained on streamer.world (models/tiny.py, train/)
    "tiny": ("streamer.models.tiny", "load_tiny"),
}

ADAPTERS: dict[str, type[ModelAdapter]] = {  # a checkpoint's config.json model_type -> its adapter
    "smolvlm": SmolVLMAdapter,
    "idefics3": SmolVLMAdapter,  # SmolVLM (v1) checkpoints use the Idefics3 model type
    "llava_onevision": LlavaOnevisionAdapter,
    "qwen2_5_vl": QwenVLAdapter,
    "qwen3_vl": Qwen3VLAdapter,
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
HUB_PROBE_TIMEOUT_S = 3.0


def list_builtin() -> list[str]:
    """Names `load_model` builds without any files."""
    return list(_BUILTINS)


def load_model(
    name_or_path: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
    speed: str = "exact",
) -> ModelAdapter:
    """Load a model adapter. device None: cuda if available else cpu; dtype None: float32 on cpu; speed: "exact"
    or "int8" (`streamer.models.runtime.make_fast`).

    Raises ConfigError for a bad device/dtype/speed and ModelLoadError for anything that cannot be loaded.
    """
    settings = LoadSettings(name_or_path, device, dtype, speed)
    name = settings.name_or_path
    start = time.perf_counter()
    if name in _BUILTINS:
        module, function = _BUILTINS[name]
        adapter = getattr(importlib.import_module(module), function)(settings.device, settings.dtype)
    else:
        adapter = _load_checkpoint(name, settings.device, settings.dtype)
    if settings.speed == "int8":
        make_fast(adapter.model)
        adapter.speed = settings.speed
    logger.info(
        "loaded %s (%s) on %s in %s (speed %s) in %.1f s",
        name, adapter.family, settings.device, settings.dtype, speed, time.perf_counter() - start,
    )  # fmt: skip
    return adapter


def _choices() -> str:
    return f"pass --model PATH to a downloaded checkpoint or one of: {', '.join(list_builtin())}"


def _load_checkpoint(name: str, device: torch.device, dtype: torch.dtype) -> ModelAdapter:
    local = Path(name).expanduser()
    if local.is_dir():
        source, local_only = str(local), True
        config_file = local / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"cannot load model {name!r}: the directory has no config.json; {_choices()}")
    elif _looks_like_path(name) or local.exists():
        raise ModelLoadError(f"cannot load model {name!r}: not a local directory; {_choices()}")
    elif not _HUB_ID.match(name):
        raise ModelLoadError(
            f"unknown model {name!r}: not a built-in name, a local directory or a hub id (owner/name); {_choices()}"
        )
    else:
        source = name
        local_only = _hub_offline()
        config_file = _hub_config(name, local_only)

    model_type = _read_model_type(name, config_file)
    family = ADAPTERS.get(model_type)
    if family is None:
        raise ModelLoadError(
            f"cannot load model {name!r}: unsupported model type {model_type!r} "
            f"(supported: {', '.join(sorted(ADAPTERS))}); {_choices()}"
        )
    try:
        return family.from_pretrained(source, device=device, dtype=dtype, local_files_only=local_only)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as err:
        where = " from the local hub cache (the hub is unreachable)" if local_only and source == name else ""
        raise ModelLoadError(
            f"cannot load model {name!r}{where}: {type(err).__name__}: {first_line(err)}; {_choices()}"
        ) from err


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name in (".", "..")
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
        or bool(re.match(r"^[A-Za-z]:[\\/]", name))
    )


def _hub_offline() -> bool:
    """True when hub files must come from the local cache: offline mode set, or the hub is unreachable."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # a proxy may reach the hub where a direct connection cannot: let the client try
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return False
    except OSError as err:
        logger.info("the hub at %s is unreachable (%s); using the local hub cache only", constants.ENDPOINT, err)
        return True


def _hub_config(name: str, local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name, "config.json", local_files_only=local_only))
    except Exception as err:  # hub errors are many types (HTTP, validation, not cached, gated, ...)
        if local_only:
            raise ModelLoadError(
                f"cannot load model {name!r}: not a local directory and the hub is unreachable; {_choices()}"
            ) from err
        raise ModelLoadError(
            f"cannot load model {name!r} from the hub: {type(err).__name__}: {first_line(err)}; {_choices()}"
        ) from err


def _read_model_type(name: str, config_file: Path) -> str | None:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load model {name!r}: unreadable config.json ({err}); {_choices()}") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"cannot load model {name!r}: config.json is not a JSON object; {_choices()}")
    return config.get("model_type")
