"""What the bounded cache holds, said in words: one line for a terminal, from `StreamSession.stats()`.

The demo prints it; the web UI draws the same numbers in its cache panel. Nothing here
measures anything: it only formats the measured stats.
"""

from __future__ import annotations

from streamer.shared_types import format_timestamp


def cache_line(stats: dict) -> str:
    """e.g. "KV 243/256 tokens (0.8 MB) of 1524 seen: 1281 evicted, 1281 merged; kept 61 text + 178 frame
    tokens, from 17 moments 00:00:00-00:00:55 in some layer" (heads and layers keep different tokens)."""
    budget = stats["budget"]
    held = f"KV {stats['kv_tokens']}/{budget if budget is not None else 'unbounded'} tokens"
    line = f"{held} ({stats['kv_bytes'] / 2**20:.1f} MB) of {stats['seen_tokens']} seen"
    layers = max(1, len(stats["tokens_per_layer"]))
    evicted, merged = stats["evicted"] // layers, stats["merged"] // layers  # per layer, like the token counts
    if evicted:
        line += f": {evicted} evicted" + (f", {merged} merged into kept tokens" if merged else " (dropped)")
    kept = stats["kept_by_modality"]
    times = stats["video_times"]
    if times:
        line += (f"; kept {kept['text']} text + {kept['image'] + kept['other']} frame tokens, from "
                 f"{len(times)} moments {format_timestamp(times[0])}-{format_timestamp(times[-1])} in some layer")
    return line
