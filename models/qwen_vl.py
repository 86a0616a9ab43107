"""Adapter for Qwen2.5-VL (ViT with window attention + Qwen2 LM, 3-D M-RoPE): each chunk as one video.

Prompt layout (Qwen chat template, as `Qwen2_5_VLProcessor` writes a video; N = tokens of the chunk):

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    <|vision_start|><|video_pad|>*N<|vision_end|><|vision_start|><|video_pad|>*N<|vision_end|>What is happening?<|im_end|>
    <|im_start|>assistant
    <answer><|im_end|>
    <|im_start|>user
    <|vision_start|>...

Frames go through the official video path: resized to a multiple of 28 px inside the checkpoint's
pixel range (`smart_resize`), normalised with its mean/std, and cut into temporal patches of 2 frames
(an odd chunk repeats its last frame, as the video processor pads a video's end), so a chunk of n
frames costs ceil(n/2) x (h/28) x (w/28) tokens: 56 per frame for a 384x216 frame. Positions are the
model's own M-RoPE rule (`get_vision_position_ids`): a video block starts at the next position, its
t axis steps `tokens_per_second` x seconds per temporal patch, h/w count rows/columns, and text after it
starts max(rows, cols) later. The prompt carries them as an `MRopeLayout` and the cache places it.

What streaming changes, and why (tests/test_parity.py asserts exactly this): with one chunk before a
question the tokens, pixels and positions are the official ones. A stream of several chunks is
several video blocks (a `<|vision_end|><|vision_start|>` pair between chunks, the t axis starting again
at each): the official layout makes the whole video one block, whose t axis grows with the stream's
length, so its positions could never be compacted into a fixed budget, and a stream has no end at which
to close it before a question comes. Seconds per temporal patch come from the frames' own times (the
official processor takes them from the sampling fps; the same at a steady rate).

Deliberately not here: images (`<|image_pad|>`), loading by name (registry.py), the tiny random model.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from streamer.models.chatml import ChatMLAdapter
from streamer.models.pixels import normalised_frames
from streamer.shared_types import MRopeLayout, Segment

logger = logging.getLogger(__name__)

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
REFERENCE_FRAME = (216, 384)  # (h, w) a 16:9 frame at the sampler's default --max-side, for tokens_per_frame


def smart_resize_hw(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The official `smart_resize` (Qwen2-VL image/video processors): a multiple of `factor` on each side,
    the area inside [min_pixels, max_pixels], the aspect ratio kept as near as possible."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    return tuple(smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels))


def patchify_video(frames: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """(n, C, H, W) frames -> (gt * gh * gw, C * temporal * patch^2) patches and [gt, gh, gw], the layout
    of the official Qwen2-VL video processor (frames padded to a multiple of `temporal` by repeating the last)."""
    if pad := -frames.shape[0] % temporal:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    n, c, h, w = frames.shape
    gt, gh, gw = n // temporal, h // patch, w // patch
    x = frames.view(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, gh/m, gw/m, m, m, C, T, P, P)
    return x.reshape(gt * gh * gw, c * temporal * patch * patch), [gt, gh, gw]


class QwenVLAdapter(ChatMLAdapter):
    """Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`) models."""

    family = "qwen2_5_vl"

    def __init__(
        self,
        name: str,
        model,
        tokenizer,
        image_processor,
        *,
        is_random: bool = False,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        super().__init__(name, model, tokenizer, image_processor, is_random=is_random, system_prompt=system_prompt,
                         needed=(VISION_END,), config_ids={VIDEO_PAD: "video_token_id", VISION_START: "vision_start_token_id"})
        config = model.config
        self.image_token_id = int(config.video_token_id)
        self.other_token_ids = tuple(tokenizer.convert_tokens_to_ids([VISION_START, VISION_END]))
        vision = config.vision_config
        self.patch = int(vision.patch_size)
        self.merge = int(vision.spatial_merge_size)
        self.temporal = int(vision.temporal_patch_size)
        self.tokens_per_second = float(getattr(vision, "tokens_per_second", 1.0))
        size = image_processor.size
        self.min_pixels = int(size.get("shortest_edge") or image_processor.min_pixels)
        self.max_pixels = int(size.get("longest_edge") or image_processor.max_pixels)
        # per frame (a temporal patch over its frames) of a 384x216 frame; other sizes: tokens_per_patch
        self.tokens_per_frame = self.tokens_per_patch(*REFERENCE_FRAME) // self.temporal

    # ----------------------------------------------------------------- sizes

    def frame_hw(self, height: int, width: int) -> tuple[int, int]:
        """Size (h, w) in px a (height, width) frame is resized to."""
        return smart_resize_hw(height, width, self.patch * self.merge, self.min_pixels, self.max_pixels)

    def tokens_per_patch(self, height: int, width: int) -> int:
        """Tokens of one temporal patch (`temporal` frames) of (height, width) frames."""
        h, w = self.frame_hw(height, width)
        return (h // self.patch) * (w // self.patch) // self.merge**2

    # ----------------------------------------------------------------- family hooks

    def _frame_segments(self, frames, opens_turn: bool) -> list[Segment]:
        """One video block: <|vision_start|>, each temporal patch's tokens (at its first frame's time), <|vision_end|>."""
        n = self.tokens_per_patch(*np.asarray(frames[0].image).shape[:2])
        starts = [float(f.time_s) for f in frames[:: self.temporal]]
        segments = [Segment(VISION_START, starts[0])]
        segments += [Segment(VIDEO_PAD * n, t) for t in starts]
        return segments + [Segment(VISION_END, starts[-1])]

    def _pixel_inputs(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        size = self.frame_hw(*images[0].shape[:2])
        frames = normalised_frames(images, size, self.image_processor)
        patches, grid = patchify_video(torch.from_numpy(frames), self.patch, self.merge, self.temporal)
        return {"pixel_values_videos": patches, "video_grid_thw": torch.tensor([grid])}  # (N, C*T*P*P), (1, 3)

    def _position_blocks(self, grid: torch.Tensor, patch_times: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        """(grid (t, h, w), t-axis step) of each run of video tokens in a chunk: one block of the whole
        chunk, its t axis spaced by `tokens_per_second` x seconds per temporal patch."""
        seconds = float(patch_times.double().diff().mean()) if patch_times.numel() > 1 else 0.0
        return [(grid, round(self.tokens_per_second * seconds, 6))]  # float32 times: 0.6666667 s -> 2/3's step

    def _rope_layout(self, input_ids: torch.Tensor, times: torch.Tensor, pixel_inputs) -> MRopeLayout:
        """The model's own positions for this prompt from 0: text tokens one by one, each video block by
        `get_vision_position_ids` (text after a block starts max(rows, cols) after its start)."""
        grid = pixel_inputs["video_grid_thw"][0]
        ids = input_ids[0]
        per_patch = int(grid[1] * grid[2]) // self.merge**2
        is_video = ids == self.image_token_id
        blocks = iter(self._position_blocks(grid, times[is_video][::per_patch]))
        pos, anchor, adv = [], [], []
        cur, i, n = 0, 0, ids.numel()
        while i < n:
            j = i
            while j < n and bool(is_video[j]) == bool(is_video[i]):
                j += 1
            if is_video[i]:  # one block: tokens share its start and take max(rows, cols) positions
                block_grid, step = next(blocks)
                pos.append(self.model.model.get_vision_position_ids(cur, block_grid, 1, self.merge, step))
                size = int(max(block_grid[1], block_grid[2])) // self.merge
                anchor.append(torch.full((j - i,), cur))
                adv.append(torch.full((j - i,), size))
                cur += size
            else:  # text: one position each, on all three axes
                text = cur + torch.arange(j - i)
                pos.append(text.expand(3, -1))
                anchor.append(text)
                adv.append(torch.ones(j - i, dtype=torch.long))
                cur += j - i
            i = j
        return MRopeLayout(torch.cat(pos, 1).long(), torch.cat(anchor).long(), torch.cat(adv).long())


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL (`Qwen3VLForConditionalGeneration`): each temporal patch of 2 frames is its own block,
    after its time as text, as `Qwen3VLProcessor` writes a video:

        <{t:.1f} seconds><|vision_start|><|video_pad|>*N<|vision_end|><{t:.1f} seconds><|vision_start|>...

    t is the mean time of the patch's two frames. Every block starts where the previous text ends and its
    tokens all have the same t position (interleaved M-RoPE). A stream fed in chunks is therefore exactly
    the official video; the one difference is an odd chunk, whose last frame is repeated (the processor
    pads only the video's end).
    """

    family = "qwen3_vl"

    def __init__(self, name: str, model, tokenizer, image_processor, *, is_random: bool = False,
                 system_prompt: str | None = None) -> None:  # Qwen3-VL's template adds no default system turn
        super().__init__(name, model, tokenizer, image_processor, is_random=is_random, system_prompt=system_prompt)

    def _frame_segments(self, frames, opens_turn: bool) -> list[Segment]:
        n = self.tokens_per_patch(*np.asarray(frames[0].image).shape[:2])
        segments = []
        for k in range(0, len(frames), self.temporal):
            patch = frames[k : k + self.temporal]
            first, last = float(patch[0].time_s), float(patch[-1].time_s)  # a short last patch repeats its frame
            text = f"<{(first + last) / 2:.1f} seconds>{VISION_START}{VIDEO_PAD * n}{VISION_END}"
            segments.append(Segment(text, first))
        return segments

    def _position_blocks(self, grid: torch.Tensor, patch_times: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        one = grid.clone()
        one[0] = 1
        return [(one, 1.0)] * int(grid[0])  # one block per temporal patch, as get_rope_index splits a video
