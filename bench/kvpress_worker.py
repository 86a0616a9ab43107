"""kvpress side of bench_retrieval.py; runs inside kvpress's own venv (`bench/kvpress_venv.py`).

Reads a JSON job (model folder, token ids of each prompt's context and question, presses, ratios),
writes a JSON of results. For every prompt and press: prefill the context with the press (kvpress
compresses during this first prefill only), then the question at positions after the full context
(as `KVPressTextGenerationPipeline.generate_answer` does), then greedy decoding. Recorded: the
first-token log-probabilities (for KL against the full cache), the greedy tokens, prefill seconds,
decode ms/token and the KV tokens held; KL(full || press) of the first answer token is computed here.
The scorer presses (`SHARED`) are applied to one captured prefill per prompt (`shared_prefill`: the same
result as a prefill per press, checked by `"unshared": true` in the job); KVzip runs its own prefill. Streaming (`stream_chunk`): the context arrives in chunks; the
press is active for every chunk, and kvpress compresses the first one only (later appends are not a
prefill), so the cache grows with the stream. Imports nothing from this project but `retrieval_task`.

    bench/kvpress_env/.venv/bin/python bench/kvpress_worker.py JOB.json OUT.json
"""

from __future__ import annotations

import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, DynamicCache

import kvpress

PRESSES = {
    "SnapKV": lambda r: kvpress.SnapKVPress(compression_ratio=r),
    "StreamingLLM": lambda r: kvpress.StreamingLLMPress(compression_ratio=r),
    "TOVA": lambda r: kvpress.TOVAPress(compression_ratio=r),
    "KNorm": lambda r: kvpress.KnormPress(compression_ratio=r),
    "ExpectedAttention": lambda r: kvpress.ExpectedAttentionPress(compression_ratio=r),
    "KeyDiff": lambda r: kvpress.KeyDiffPress(compression_ratio=r),
    "KVzip": lambda r: kvpress.KVzipPress(compression_ratio=r),
}
SHARED = {"SnapKV", "StreamingLLM", "TOVA", "KNorm", "ExpectedAttention", "KeyDiff"}  # scorer presses: one prefill serves all


@torch.no_grad()
def shared_prefill(model, context: list[int]) -> tuple[list[tuple], dict]:
    """One plain prefill of the context (returned as the full cache: {cache, prefill_s, kv_tokens}); per attention layer what kvpress's forward hook would see after it:
    (module, hidden_states, keys, values, kwargs). A scorer press compresses each layer's cache after that
    layer's attention, so the prefill's hidden states never depend on the press: compressing these captures
    gives what `with press(model): model(context)` gives, for every press and ratio at the cost of one prefill."""
    seen, hooks = [], []
    cache = DynamicCache()

    def hook(module, args, kwargs, output):
        layer = kwargs["past_key_values"].layers[module.layer_idx]
        seen.append((module, kwargs["hidden_states"], layer.keys.clone(), layer.values.clone(), dict(kwargs)))

    inner = model.model
    for layer in inner.layers:
        layer.self_attn.rotary_emb = inner.rotary_emb  # as kvpress's context manager does
        hooks.append(layer.self_attn.register_forward_hook(hook, with_kwargs=True))
    start = time.perf_counter()
    try:
        inner(input_ids=torch.tensor([context]), past_key_values=cache, position_ids=torch.arange(len(context))[None])
    finally:
        for h in hooks:
            h.remove()
    prefill_s = time.perf_counter() - start
    return seen, {"cache": cache, "prefill_s": prefill_s, "kv_tokens": len(context)}


@torch.no_grad()
def run_shared(model, press, seen: list[tuple], context_len: int, question: list[int], new_tokens: int) -> dict:
    """The press applied to the captured prefill (`shared_prefill`), then the question and greedy decoding."""
    start = time.perf_counter()
    press.post_init_from_model(model)
    cache = DynamicCache()
    for module, hidden, keys, values, kwargs in seen:
        k, v = press.compress(module, hidden, keys, values, None, kwargs)
        cache.update(k, v, module.layer_idx)
    compress_s, kv_tokens = time.perf_counter() - start, cache.get_seq_length()
    return {**answer(model, cache, context_len, question, new_tokens), "prefill_s": compress_s, "kv_tokens": kv_tokens}


@torch.no_grad()
def answer(model, cache, context_len: int, question: list[int], new_tokens: int) -> dict:
    """Question at positions after the whole context, then greedy decoding; times the decode steps."""
    pos = torch.arange(context_len, context_len + len(question)).unsqueeze(0)
    out = model(input_ids=torch.tensor([question]), past_key_values=cache, position_ids=pos, logits_to_keep=1)
    logp = out.logits[0, -1].float().log_softmax(-1)
    tokens = [int(logp.argmax())]
    start = time.perf_counter()
    for i in range(new_tokens - 1):
        step = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=cache,
                     position_ids=pos[:, -1:] + 1 + i)
        tokens.append(int(step.logits[0, -1].argmax()))
    decode_ms = (time.perf_counter() - start) * 1e3 / max(new_tokens - 1, 1)
    return {"logp": logp.tolist(), "tokens": tokens, "decode_ms_per_token": decode_ms}


@torch.no_grad()
def run_one(model, press, context: list[int], question: list[int], new_tokens: int, chunk: int | None) -> dict:
    cache = DynamicCache()
    start = time.perf_counter()
    ctx = (lambda: press(model)) if press is not None else None
    pieces = [context] if chunk is None else [context[i:i + chunk] for i in range(0, len(context), chunk)]
    done = 0
    for piece in pieces:
        ids = torch.tensor([piece])
        pos = torch.arange(done, done + len(piece)).unsqueeze(0)
        if ctx is None:
            model.model(input_ids=ids, past_key_values=cache, position_ids=pos)
        else:
            with ctx():
                model.model(input_ids=ids, past_key_values=cache, position_ids=pos)
        done += len(piece)
    prefill_s = time.perf_counter() - start
    kv_tokens = cache.get_seq_length()
    out = answer(model, cache, len(context), question, new_tokens)
    return {**out, "prefill_s": prefill_s, "kv_tokens": kv_tokens}


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    torch.set_num_threads(job.get("threads", 1))
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32).eval()
    results = []
    for p in job["prompts"]:
        seen, full = shared_prefill(model, p["context_ids"])  # the full cache is the captured prefill's own
        runs = {"full": {**answer(model, full.pop("cache"), len(p["context_ids"]), p["question_ids"], job["new_tokens"]),
                         **full}}
        for name in job["presses"]:
            for ratio in job["ratios"]:
                if name in SHARED and not job.get("unshared"):
                    runs[f"{name}@{1 - ratio:.0%}"] = run_shared(model, PRESSES[name](ratio), seen, len(p["context_ids"]),
                                                                p["question_ids"], job["new_tokens"])
                else:
                    runs[f"{name}@{1 - ratio:.0%}"] = run_one(model, PRESSES[name](ratio), p["context_ids"],
                                                             p["question_ids"], job["new_tokens"], None)
        for name in job.get("stream_presses", []):
            for ratio in job["ratios"]:
                runs[f"{name}@{1 - ratio:.0%}/stream"] = run_one(model, PRESSES[name](ratio), p["context_ids"],
                                                                p["question_ids"], job["new_tokens"], job["stream_chunk"])
        ref = torch.tensor(runs["full"]["logp"])
        for r in runs.values():  # KL(full || run) of the first answer token, nats; then drop the distributions
            r["kl_first"] = float((ref.exp() * (ref - torch.tensor(r.pop("logp")))).sum())
        results.append({"seed": p["seed"], "runs": runs})
        print(f"kvpress prompt {p['seed']} done", flush=True)
    import importlib.metadata as md
    versions = {k: md.version(k) for k in ("kvpress", "transformers", "torch")}
    open(sys.argv[2], "w").write(json.dumps({"versions": versions, "results": results}))


if __name__ == "__main__":
    main()
