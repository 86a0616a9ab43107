"""Real-size speed of each supported family on this machine, with random weights (no model hub here).

For each family a checkpoint directory is written at the hub model's size (layers, widths, heads,
vision tower, image size, vocabulary size, M-RoPE sections, pixel range; the values of the hub
config.json files of SmolVLM2-256M-Video-Instruct, llava-onevision-qwen2-0.5b-ov-hf and
Qwen2.5-VL-3B-Instruct, written from their model cards and configs, not downloaded) with random bf16
weights, the SmolLM2 tokenizer plus the family's special tokens (token ids differ from the hub's; speed
does not depend on them), and the PIL image processor with the checkpoint's settings. It is then loaded
through `load_model(DIR)`, exactly as `--model DIR` does, and a 1 fps stream of 384x216 frames goes
through `StreamSession` with a 10% budget (10% of a 5-minute stream's tokens; the cache is first filled
to the budget with text, which costs the language model only, then frames are timed as they evict):

- seconds per frame, split into vision tower (forward hooks on the tower) and the rest (language model,
  cache compression), over the frames after the cache first reached its budget;
- real-time factor at 1 fps: seconds per frame / 1 s (above 1: a live stream falls behind);
- RSS after the run and the process's peak RSS (cumulative over the runs before it in the same process);
- the question's prefill and decode ms/token of a 16-token answer at the budget;
- float32 and bfloat16 (a family is skipped in a dtype when the machine lacks the memory for it).

    .venv/bin/python bench/bench_real_models.py [--frames 6] [--families smolvlm,llava,qwen] [--dtypes float32,bfloat16]

Writes bench/results/real_models.json. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from common import machine, setup, write_json

from streamer.frames import Chunk
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.sources import Frame
from streamer.vocab import Conversation

FRAME_HW = (216, 384)  # a 16:9 frame at the sampler's default --max-side 384
STREAM_S = 300  # the budget is 10% of a 5-minute stream's tokens at 1 fps


def _smolvlm(tok_ids):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    config = SmolVLMConfig(
        text_config=dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49280, max_position_embeddings=8192,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16),
        scale_factor=4, image_token_id=tok_ids["<image>"],
    )  # fmt: skip
    size = {"longest_edge": 512}
    return SmolVLMForConditionalGeneration, config, SmolVLMImageProcessorPil(
        size=size, max_image_size=size, do_image_splitting=False
    )


def _llava(tok_ids):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                           num_hidden_layers=26, num_attention_heads=16, image_size=384, patch_size=14,
                           vision_use_head=False),
        text_config=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=152000,
                         max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True),
        image_token_index=tok_ids["<image>"], video_token_index=tok_ids["<video>"],
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )  # fmt: skip
    return LlavaOnevisionForConditionalGeneration, config, LlavaOnevisionImageProcessorPil(
        size={"height": 384, "width": 384}
    )


def _qwen(tok_ids):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000,
                         rms_norm_eps=1e-6, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        image_token_id=tok_ids["<|image_pad|>"], video_token_id=tok_ids["<|video_pad|>"],
        vision_start_token_id=tok_ids["<|vision_start|>"], vision_end_token_id=tok_ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration, config, Qwen2VLImageProcessorPil(
        size={"shortest_edge": 3136, "longest_edge": 12845056}
    )


FAMILIES = {  # name: (hub id it stands for, special tokens, builder)
    "smolvlm": ("HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
                ("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"), _smolvlm),
    "llava": ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", ("<image>", "<video>"), _llava),
    "qwen": ("Qwen/Qwen2.5-VL-3B-Instruct",
             ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"), _qwen),
}  # fmt: skip


def write_checkpoint(family: str, path: Path) -> int:
    """A checkpoint directory at the hub size with random bf16 weights; returns the parameter count."""
    from streamer.models.smollm2_tokenizer import load_smollm2_tokenizer

    _, tokens, build = FAMILIES[family]
    tokenizer = load_smollm2_tokenizer(tokens)
    model_class, config, image_processor = build({t: tokenizer.convert_tokens_to_ids(t) for t in tokens})
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # drawn in bf16: a 3B model never exists in float32 here
    try:
        model = model_class(config)
    finally:
        torch.set_default_dtype(default)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    del model
    gc.collect()
    return n_params


def _frames(n: int, start: int) -> Chunk:
    rng = np.random.default_rng(start)
    frames = tuple(Frame(rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8), float(start + i)) for i in range(n))
    return Chunk(frames, start)


def measure(path: Path, family: str, dtype: str, n_frames: int, chunk: int) -> dict:
    start = time.perf_counter()
    adapter = load_model(str(path), device="cpu", dtype=dtype)
    load_s = time.perf_counter() - start
    model = adapter.model
    tower = next(m for name, m in model.named_modules() if name.endswith(("vision_model", "vision_tower", "visual")))
    vision_s = [0.0]

    def pre(*_):
        vision_s.append(time.perf_counter())

    def post(*_):
        vision_s[0] += time.perf_counter() - vision_s.pop()

    tower.register_forward_pre_hook(pre)
    tower.register_forward_hook(post)
    opened = adapter.chunk_prompt(_frames(chunk, 0), Conversation())
    tokens_per_frame = adapter.chunk_prompt(_frames(chunk, 0), opened.after).n_tokens / chunk  # inside a turn
    budget = int(0.1 * STREAM_S * tokens_per_frame)
    session = StreamSession(adapter, WindowConfig(policy="combined", budget=budget))
    filler = adapter.tokenizer("The camera shows a quiet street. " * 8, add_special_tokens=False)["input_ids"]
    filler = (filler * math.ceil(budget / len(filler)))[:budget]
    for i in range(0, budget, 512):  # the cache at its budget before timing (text: the LM only; not timed)
        session._forward_ids(filler[i : i + 512])
    t = 0
    session.ingest(_frames(chunk, t))  # warm-up chunk, not timed
    t += chunk
    vision_s[0] = 0.0
    begin = time.perf_counter()
    for _ in range(max(1, n_frames // chunk)):
        session.ingest(_frames(chunk, t))
        t += chunk
    measured = max(1, n_frames // chunk) * chunk
    total = time.perf_counter() - begin
    per_frame = total / measured
    vis = vision_s[0] / measured
    stamps = [time.perf_counter()]
    for _ in session.ask("What is happening?", max_new_tokens=16):  # about one piece per generated token
        stamps.append(time.perf_counter())
    n_answer = len(stamps) - 1
    decode_ms = 1000 * (stamps[-1] - stamps[1]) / (n_answer - 1) if n_answer > 1 else math.nan
    stats = session.stats()
    out = {
        "family": family, "stands_for": FAMILIES[family][0], "dtype": dtype, "load_s": round(load_s, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "tokens_per_frame_with_text": round(tokens_per_frame, 1), "budget": budget,
        "frames_measured": measured, "s_per_frame": round(per_frame, 3), "vision_s_per_frame": round(vis, 3),
        "lm_s_per_frame": round(per_frame - vis, 3), "real_time_factor_1fps": round(per_frame / 1.0, 2),
        "question_prefill_s": round(stamps[1] - stamps[0], 2) if n_answer else None,
        "decode_ms_per_token": round(decode_ms, 1), "answer_pieces": n_answer,
        "kv_tokens": stats["kv_tokens"], "kv_mb": round(stats["kv_bytes"] / 2**20, 1),
        "rss_gb": round(psutil.Process().memory_info().rss / 2**30, 2),
        "peak_rss_gb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }  # fmt: skip
    print(out, flush=True)
    del session, adapter, model
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="smolvlm,llava,qwen")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--frames", type=int, default=4, help="frames timed per run, after the cache is full")
    ap.add_argument("--chunk", type=int, default=2, help="frames per chunk")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup(args.threads)
    started = machine()
    runs = []
    for family in args.families.split(","):
        with tempfile.TemporaryDirectory(prefix=f"real-{family}-") as tmp:
            path = Path(tmp)
            n_params = write_checkpoint(family, path)
            for dtype in args.dtypes.split(","):
                need = n_params * (4 if dtype == "float32" else 2) * 1.4
                avail = psutil.virtual_memory().available
                if need > avail:
                    runs.append({"family": family, "dtype": dtype, "skipped": f"needs ~{need / 2**30:.1f} GiB, "
                                 f"{avail / 2**30:.1f} GiB available"})  # fmt: skip
                    print(runs[-1], flush=True)
                    continue
                runs.append(measure(path, family, dtype, args.frames, args.chunk))
    write_json("real_models", {"frame_hw": FRAME_HW, "stream_s_for_budget": STREAM_S, "runs": runs}, started)


if __name__ == "__main__":
    main()
