"""The model-adapter interface: frames, questions and answer ends in, `Prompt`s out.

A stream's conversation has one shape for every model family:

    [opening] [user turn: frames of chunk 1, frames of chunk 2, ..., question] [assistant: answer]
              [user turn: more frames ..., question] [assistant: answer] ...

`ModelAdapter` applies the turn rules (given a `Conversation`, which turn is open; every prompt says
where the conversation stands after it) and the per-token tagging, but holds no conversation itself,
so one loaded model serves many sessions. A family
subclass only says how its chat template writes each piece (opening, user-turn start, one frame with
its "HH:MM:SS" time, the question with the generation prefix, the end of an answer) and how its
frames become pixel tensors.

Deliberately not here: running the model, positions, the KV cache and generation. The session calls
`model(**prompt.inputs, past_key_values=cache, use_cache=True)` itself and the cache assigns positions.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from streamer.errors import ModelLoadError
from streamer.models.prompt import encode_segments
from streamer.models.watch_delta import WatchDelta
from streamer.shared_types import Conversation, MRopeLayout, Phase, Prompt, Segment, format_timestamp
from streamer.video.frame import Chunk, Frame

__all__ = ["ModelAdapter"]

logger = logging.getLogger(__name__)

# pixel input -> (its kind in the forward's `mm_encoder_outputs`, the model's method that encodes it)
_ENCODERS = {"pixel_values": ("image", "get_image_features"), "pixel_values_videos": ("video", "get_video_features")}


class ModelAdapter:
    """Base class: one subclass per model family (SmolVLM, LLaVA-OneVision, ...).

    Set here, from the constructor's arguments:
        name: the built-in name, hub id or directory it was loaded from
        model: the transformers PreTrainedModel (eval mode, on `device` in `dtype`)
        tokenizer: its (fast) tokenizer; image_processor: its image processor (pixel sizes and statistics)
        is_random: True when the weights are random (answers are noise; for tests and demos)
        note: what a user should know about this model's answers (None for a real checkpoint); the CLI
            prints it and the UI shows it
    Set by each family's constructor (read everywhere, never changed):
        image_token_id: the placeholder token that receives one vision feature vector
        tokens_per_frame: placeholder tokens (IMAGE) one frame expands to
        other_token_ids: image-boundary markers (tagged OTHER); empty when the family has none
        eos_token_ids: tokens that end an answer (`_eos_ids_with` the family's end of turn)
    """

    family: ClassVar[str] = "base"
    image_token_id: int
    tokens_per_frame: int
    other_token_ids: tuple[int, ...] = ()
    eos_token_ids: list[int]

    def __init__(self, name: str, model, tokenizer, image_processor=None, *, is_random: bool = False) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.is_random = is_random
        self.speed = "exact"  # "int8" once `streamer.models.runtime.make_fast` quantized it
        self.watch_delta: WatchDelta | None = None  # weights of standing-question passes only (tiny's presence adapter)
        self.note: str | None = (
            f"'{name}' has random weights: its answers are noise, useful only to test the pipeline; "
            "pass --model for a real model" if is_random else None
        )
        param = next(model.parameters())
        self.device: torch.device = param.device
        self.dtype: torch.dtype = param.dtype

    def _check_tokens(self, needed: Sequence[str], config_ids: dict[str, str]) -> dict[str, int]:
        """The tokenizer's vocabulary, after checking it has every token of `needed` and of `config_ids`
        (token -> the config field holding its id) at the id the config gives it; ModelLoadError if not."""
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in (*needed, *config_ids) if t not in vocab]
        if missing:
            raise ModelLoadError(f"model {self.name!r}: its tokenizer lacks the {self.family} tokens {missing}")
        for token, key in config_ids.items():
            if vocab[token] != getattr(self.model.config, key):
                raise ModelLoadError(f"model {self.name!r}: tokenizer {token} id {vocab[token]} != config {key} "
                                     f"{getattr(self.model.config, key)}")  # fmt: skip
        return vocab

    @classmethod
    def from_pretrained(
        cls, source: str, *, device: torch.device, dtype: torch.dtype, local_files_only: bool = False
    ) -> "ModelAdapter":
        """Load a checkpoint (hub id or local directory) with its tokenizer and image processor.
        Errors propagate; the registry words them."""
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
        image_processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_files_only)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, local_files_only=local_files_only)
        return cls(source, model.to(device).eval(), tokenizer, image_processor)

    # ----------------------------------------------------------------- family hooks (override)

    def _opening_text(self) -> str:
        """Text before the first user turn (system prompt, BOS-like markers)."""
        raise NotImplementedError

    def _user_open_text(self) -> str:
        """Text that opens a user turn."""
        raise NotImplementedError

    def _frame_text(self, frame: Frame) -> str:
        """One frame: its time as text, then its placeholder tokens (expanded)."""
        raise NotImplementedError

    def _question_text(self, question: str, after_frames: bool) -> tuple[str, str]:
        """(user text: separator + question, template: end of the user turn + assistant generation prefix).

        The first part is tokenized as literal text (special-token strings in it stay plain text)."""
        raise NotImplementedError

    def _assistant_end_text(self) -> str:
        """Text that closes an assistant turn after the generated answer."""
        raise NotImplementedError

    def _pixel_inputs(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Forward kwargs holding the pixels of these frames, in order. images: (H, W, 3) uint8 RGB."""
        raise NotImplementedError

    def _frame_segments(self, frames: Sequence[Frame], opens_turn: bool) -> list[Segment]:
        """The text of one chunk's frames, one segment per frame carrying its time (override when frames
        are not written one by one, e.g. in temporal patches). opens_turn: no frames precede them in this
        user turn."""
        return [Segment(self._frame_text(f), float(f.time_s)) for f in frames]

    def _rope_layout(
        self, input_ids: torch.Tensor, times: torch.Tensor, pixel_inputs: dict[str, torch.Tensor]
    ) -> MRopeLayout | None:
        """3-D positions, from 0, of a prompt with frames (M-RoPE families); None for 1-D RoPE.
        input_ids: (1, T) on the CPU; times: (T,) the tokens' video times."""
        return None

    # ----------------------------------------------------------------- public API

    def chunk_prompt(self, chunk: Chunk, conv: Conversation, pixels: dict[str, Any] | None = None) -> Prompt:
        """The frames of one chunk, each preceded by its "HH:MM:SS" time, inside a user turn.

        `conv` is where the conversation stands (a fresh `Conversation()` starts one, with the opening).
        After an answer the prompt first opens a new user turn; if answer_end() was not fed, it closes
        the assistant turn too. `pixels`: `frame_inputs(chunk.frames, ...)` made beforehand (in another
        thread, say), else made here.
        """
        if not chunk.frames:
            raise ValueError(f"chunk {chunk.index} has no frames")
        pixels = self.frame_inputs(chunk.frames) if pixels is None else pixels
        segments = self._turn_prefix(conv)
        segments += self._frame_segments(chunk.frames, opens_turn=not (conv.phase is Phase.USER and conv.has_frames))
        prompt = self._build(segments, pixels, Conversation(Phase.USER, has_frames=True))
        logger.debug("chunk %d: %d frames -> %d tokens", chunk.index, len(chunk.frames), prompt.n_tokens)
        return prompt

    def frame_inputs(self, frames: Sequence[Frame], encode: bool = False) -> dict[str, Any]:
        """The forward inputs that carry these frames: pixel tensors on the model's device (floats in its dtype).

        encode: run the vision tower now and carry its output instead of the pixels (`mm_encoder_outputs`, the
        same calls the model's forward makes on them), so a pipeline encodes the next chunk while the language
        model takes this one. The prompt's tokens and the model's answers are the same either way."""
        inputs = {key: value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
                  for key, value in self._pixel_inputs([_check_frame(f) for f in frames]).items()}
        return self._encode(inputs) if encode else inputs

    @torch.no_grad()
    def _encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        rest, outputs = dict(inputs), {}
        for key, (kind, method) in _ENCODERS.items():
            if key in rest:
                encoder = getattr(self.model.model, method)
                names = inspect.signature(encoder).parameters  # the pixels' companions: masks, grids
                outputs[kind] = encoder(rest.pop(key), **{k: v for k, v in rest.items() if k in names}, return_dict=True)
        rest.pop("pixel_attention_mask", None)  # only read with the pixels
        return {**rest, "mm_encoder_outputs": outputs}

    def proxy_ids(self) -> list[int]:
        """The family's assistant-turn opening (what ends every question prompt: ChatML
        `<|im_end|>\n<|im_start|>assistant\n`, SmolVLM `<end_of_utterance>\nAssistant:`) as token ids: the proxy
        queries of the `proxy` scorer, which stand in for a question not asked yet."""
        template = self._question_text("?", after_frames=True)[1]
        return self.tokenizer(template, add_special_tokens=False)["input_ids"]

    def question_prompt(self, question: str, conv: Conversation) -> Prompt:
        """The user question, the end of the user turn and the assistant generation prefix."""
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        segments = self._turn_prefix(conv)
        after_frames = conv.phase is Phase.USER and conv.has_frames
        user_text, template = self._question_text(question, after_frames=after_frames)
        segments += [Segment(user_text, literal=True), Segment(template)]
        return self._build(segments, {}, Conversation(Phase.ASSISTANT))

    def answer_end(self, conv: Conversation) -> Prompt:
        """Tokens that close the assistant turn after the answer, so more frames/questions can follow.

        Feed it after the generated answer tokens (without the EOS token that stopped generation).
        """
        if conv.phase is not Phase.ASSISTANT:
            raise RuntimeError(f"answer_end() needs an open assistant turn, the conversation is at {conv.phase}")
        return self._build([Segment(self._assistant_end_text())], {}, Conversation(Phase.CLOSED))

    def decode(self, ids: Sequence[int]) -> str:
        """Answer text for generated ids (special tokens dropped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        """Facts the cache and the UI need about this model."""
        tc = self.model.config.get_text_config()
        n_heads = tc.num_attention_heads
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // n_heads
        return {
            "name": self.name,
            "family": self.family,
            "n_layers": tc.num_hidden_layers,
            "n_kv_heads": getattr(tc, "num_key_value_heads", None) or n_heads,
            "head_dim": head_dim,
            "max_position_embeddings": tc.max_position_embeddings,
            "image_token_id": self.image_token_id,
            "tokens_per_frame": self.tokens_per_frame,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "is_random": self.is_random,
            "speed": self.speed,
        }

    # ----------------------------------------------------------------- helpers

    def _eos_ids_with(self, *end_of_turn_ids: int) -> list[int]:
        """The family's end-of-turn ids, then the tokenizer's and generation config's EOS, deduplicated."""
        ids = [int(i) for i in end_of_turn_ids]
        for value in (
            self.tokenizer.eos_token_id,
            getattr(getattr(self.model, "generation_config", None), "eos_token_id", None),
        ):
            if isinstance(value, int):
                ids.append(value)
            elif value is not None:
                ids += [int(v) for v in value]
        return list(dict.fromkeys(ids))

    def _turn_prefix(self, conv: Conversation) -> list[Segment]:
        """Segments needed before new user content, given where the conversation stands."""
        if conv.phase is Phase.NONE:
            return [Segment(self._opening_text()), Segment(self._user_open_text())]
        if conv.phase is Phase.ASSISTANT:
            logger.debug("closing the assistant turn implicitly (answer_end() was not fed)")
            return [Segment(self._assistant_end_text()), Segment(self._user_open_text())]
        if conv.phase is Phase.CLOSED:
            return [Segment(self._user_open_text())]
        return []

    def _build(self, segments: list[Segment], pixel_inputs: dict[str, torch.Tensor], after: Conversation) -> Prompt:
        input_ids, modality, times = encode_segments(
            self.tokenizer, segments, image_token_ids=[self.image_token_id], other_token_ids=self.other_token_ids
        )
        inputs = {"input_ids": input_ids.to(self.device), **pixel_inputs}  # the pixels are on the device already
        tensors = {key: value.cpu() for key, value in pixel_inputs.items() if isinstance(value, torch.Tensor)}
        mrope = self._rope_layout(input_ids, times, tensors) if pixel_inputs else None
        return Prompt(inputs=inputs, modality=modality, times=times, after=after, mrope=mrope)


def _check_frame(frame: Frame) -> np.ndarray:
    image = np.asarray(frame.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a frame must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    format_timestamp(frame.time_s)  # validates the time
    return image
