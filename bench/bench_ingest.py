"""Ingest throughput: frames per second, real-time factor at 1 fps, and the share of time spent compressing.

Three models:
1. `tiny-random` (random SmolVLM, 2 layers) through the real `StreamSession` path: a synthetic video
   (96x96 px, the synthetic world) sampled at 1 fps in chunks of 4 frames, vision tower included.
2. The built-in trained `tiny` (SmolLM2-135M + small vision tower), same path (at most 2 minutes of
   video: it runs near 1 frame/s on this CPU), budget 1024, if `load_model("tiny")` works; otherwise the
   JSON says why it was skipped.
3. SmolLM2-135M-Instruct with synthetic image tokens: random embeddings (scaled like the model's token
   embeddings) fed through `inputs_embeds`, 64 tokens per frame, chunks of 4 frames (256 tokens), tagged
   IMAGE with their video time; budget 2048. To measure the steady state without prefilling thousands of
   tokens first, every cache starts filled to the budget with the model's own KV of one synthetic chunk,
   tiled (see bench_decode.py); the full cache starts at the same length and then grows.

In every case the full cache and the bounded configurations ingest the same chunks round-robin (chunk i
into every cache, then chunk i+1), so their speeds are compared within the same run. The compression
share is measured directly: each cache layer is a `common.TimedLayer`, which adds the wall time of
`observe` (attention scoring + compression) and of any other `compress` call; share = that time / the
time of the whole chunk. Goal: < 5%. Real-time factor = processing time / video time (< 1 keeps up with
a live 1 fps stream). One torch thread by default. Writes bench/results/ingest[_quick].json and .png.

    .venv/bin/python bench/bench_ingest.py --quick
    .venv/bin/python bench/bench_ingest.py --variants      # also every bench_table variant on the 135M LM
"""

import argparse
import statistics
import time

import torch

import common
from common import POLICIES
from streamer.kv_window import KVWindowCache, use_window_attention
from streamer.shared_types import Modality


def session_runs(model_name: str, budget: int, seconds: int, policies: list[str]) -> dict:
    """Ingest the same chunks into one session per policy (round-robin); per-chunk wall and compress time."""
    from streamer.models.registry import load_model
    from streamer.models.smollm2_tokenizer import cache_root
    from streamer.errors import BudgetError
    from streamer.frames import SamplerConfig, iter_chunks
    from streamer.world.sample_video import write_sample
    from streamer.session import StreamSession

    adapter = load_model(model_name)
    video = cache_root() / "bench" / f"ingest_{seconds}s_world96.mp4"
    if not video.is_file():
        video.parent.mkdir(parents=True, exist_ok=True)
        write_sample(video, seconds=seconds, fps=1, frame_size=96)
    sessions = {p: StreamSession(adapter, common.window(p, budget), skip=None) for p in policies}  # time every frame
    clocks = {p: common.instrument(s.cache) for p, s in sessions.items()}
    per = {p: {"chunk_s": [], "compress_s": [], "frames": 0, "stopped_at_s": None} for p in policies}
    for chunk in iter_chunks(video, SamplerConfig(fps=1.0, chunk_frames=4, max_side=96)):
        for p, session in sessions.items():
            if per[p]["stopped_at_s"] is not None:
                continue
            before, start = clocks[p]["s"], time.perf_counter()
            try:
                session.ingest(chunk)
            except BudgetError:
                per[p]["stopped_at_s"] = chunk.frames[0].time_s
                continue
            per[p]["chunk_s"].append(time.perf_counter() - start)
            per[p]["compress_s"].append(clocks[p]["s"] - before)
            per[p]["frames"] += len(chunk.frames)
    return {"model": model_name, "budget": budget, "tokens_per_frame": adapter.tokens_per_frame,
            "results": {p: finish(r, 4) for p, r in per.items()}}


def finish(r: dict, frames_per_chunk: int) -> dict:
    """Means per chunk (a cache with chunk_slack compresses every few chunks) -> fps, real-time factor
    at 1 fps, compression share."""
    chunk, comp = r.pop("chunk_s"), r.pop("compress_s")
    if not chunk:
        return r
    mean = statistics.fmean(chunk)
    r.update(chunks=len(chunk), chunk_ms_mean=mean * 1e3, fps=frames_per_chunk / mean,
             realtime_factor_1fps=mean / frames_per_chunk, compress_ms_mean=statistics.fmean(comp) * 1e3,
             compress_share=sum(comp) / sum(chunk))
    return r


@torch.no_grad()
def lm_runs(budget: int, chunks: int, configs: list[dict], tokens_per_frame: int = 64, frames: int = 4) -> dict:
    """SmolLM2-135M with synthetic image embeddings; every config pre-filled to `budget`, then `chunks` timed."""
    model, _ = common.load_lm(max_positions=32768)
    use_window_attention(model)
    emb = model.get_input_embeddings().weight
    std = float(emb.std())
    n = tokens_per_frame * frames  # tokens per chunk
    gen = torch.Generator().manual_seed(0)
    stream = [torch.randn(1, n, emb.shape[1], generator=gen) * std for _ in range(chunks + 1)]
    seed = model(inputs_embeds=stream[0], use_cache=True).past_key_values  # the model's own KV of one chunk
    reps = -(-budget // n)
    caches, clocks = {}, {}
    for c in configs:
        cache = KVWindowCache(model.config, common.window(c["policy"], budget, c.get("merge"), c.get("obs_select", "last"),
                                                          c.get("layer_budget", "uniform"), c.get("chunk_slack", 0)))
        cache.tag(torch.full((budget,), int(Modality.IMAGE)), torch.arange(budget) // tokens_per_frame)
        for i, layer in enumerate(seed.layers):
            cache.update(layer.keys.repeat(1, 1, reps, 1)[:, :, :budget].clone(),
                         layer.values.repeat(1, 1, reps, 1)[:, :, :budget].clone(), i)
        caches[c["label"]], clocks[c["label"]] = cache, common.instrument(cache)
    per = {k: {"chunk_s": [], "compress_s": []} for k in caches}
    t0 = budget // tokens_per_frame
    for j in range(1, chunks + 1):
        times = (torch.arange(n) // tokens_per_frame + t0 + (j - 1) * frames).float()
        for label, cache in caches.items():
            before, start = clocks[label]["s"], time.perf_counter()
            cache.tag(torch.full((n,), int(Modality.IMAGE)), times)
            model(inputs_embeds=stream[j], past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.compress()
            per[label]["chunk_s"].append(time.perf_counter() - start)
            per[label]["compress_s"].append(clocks[label]["s"] - before)
    results = {}
    for label, r in per.items():
        results[label] = finish(r, frames)
        results[label]["kv_tokens_end"] = caches[label].get_seq_length()
    full = results.get("full")
    if full:
        for r in results.values():
            r["speed_vs_full"] = full["chunk_ms_mean"] / r["chunk_ms_mean"]
    return {"model": "SmolLM2-135M-Instruct + synthetic image embeddings", "budget": budget,
            "tokens_per_frame": tokens_per_frame, "frames_per_chunk": frames, "timed_chunks": chunks,
            "prefill": f"every cache starts at {budget} tokens (model KV of one synthetic chunk, tiled); "
                       "the full cache grows from there",
            "results": results}


SLACK = 256  # tokens: one chunk of 4 frames x 64 tokens on the 135M LM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--variants", action="store_true", help="time every bench_table variant on the 135M LM")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    common.setup(args.threads)
    started = common.machine()
    seconds = 120 if args.quick else 480
    out = {"settings": {"video_seconds": seconds, "fps": 1, "chunk_frames": 4, "threads": args.threads,
                        "timing": "round-robin over configurations per chunk; means per chunk; "
                                  "compress share = (observe + compress time) / chunk time, summed"}}
    out["tiny_random"] = session_runs("tiny-random", 512, seconds, ["full"] + POLICIES)
    print_runs(out["tiny_random"])
    try:
        out["tiny"] = session_runs("tiny", 256 if args.quick else 1024, 16 if args.quick else 120, ["full", "combined"])
        print_runs(out["tiny"])
    except Exception as err:  # not shipped yet, or weights missing: say so in the JSON
        out["tiny"] = {"available": False, "reason": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
        print("tiny:", out["tiny"]["reason"])
    configs = [dict(policy="full", label="full")] + [dict(policy=p, label=p) for p in POLICIES]
    for p, merge in (("sink-recent", None), ("combined", None), ("combined", "none")):
        # compress every other chunk: a cut leaves room for one more chunk
        configs.append(dict(policy=p, merge=merge, chunk_slack=SLACK, label=common.variant_label(p, merge, chunk_slack=SLACK)))
    if args.variants:
        configs += [v for v in common.table_variants() if v["label"] not in {c["label"] for c in configs}]
    out["lm_135m"] = lm_runs(2048, 3 if args.quick else 6, configs)
    print_runs(out["lm_135m"])
    name = "ingest_quick" if args.quick else "ingest"
    common.write_json(name, out, started)
    plot(out, name)


def print_runs(run: dict) -> None:
    for label, r in run["results"].items():
        if "fps" in r:
            print(f"{run['model'][:24]:24s} {label:32s} {r['fps']:7.2f} frames/s  RTF {r['realtime_factor_1fps']:.3f}  "
                  f"compress {100 * r['compress_share']:.1f}%")


def plot(out: dict, name: str) -> None:
    plt = common.plt()
    runs = [(k, v) for k, v in out.items() if isinstance(v, dict) and "results" in v]
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.5), squeeze=False)
    for ax, (key, run) in zip(axes[0], runs):
        labels = [k for k, r in run["results"].items() if "fps" in r]
        fps = [run["results"][k]["fps"] for k in labels]
        share = [100 * run["results"][k]["compress_share"] for k in labels]
        bars = ax.bar(range(len(labels)), fps, color="tab:blue")
        for b, s in zip(bars, share):
            ax.annotate(f"{s:.1f}%", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set(ylabel="frames per second (mean)", title=f"{key}: budget {run['budget']}\n(label: compression share)")
        ax.axhline(1.0, color="red", lw=0.8)
    common.save_fig(fig, name)


if __name__ == "__main__":
    main()
