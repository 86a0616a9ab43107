"""What the web UI's cache panel draws: pure functions from numbers to a figure or an HTML snippet.

- `kv_figure`: KV memory (and process RSS) over video time; the flat KV line under the budget is the
  promise of the bounded cache;
- `timeline_bins` / `timeline_html`: a strip over the video's length showing which moments are still
  held in the cache, which were seen and forgotten, and which were not seen yet;
- `layer_budget_html`: tokens held per layer against each layer's budget;
- `stats_html` / `status_html`: the key numbers and the feed's progress line;
- `chat_text`: a question or an answer, escaped for the chat;
- `alert_text` / `alerts_html`: the alerts of standing questions, as a chat line and as the page's alert box
  (both figures above mark their times too).

Nothing here touches Gradio, the model or a session: the inputs are `stats()` values and samples, so the
functions are tested directly. Figures use matplotlib's object API (no pyplot global state), which is
safe from several server threads at once.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from matplotlib.figure import Figure

from streamer.shared_types import format_timestamp

MB = 1024 * 1024
HELD, SEEN, UNSEEN = "#2e9d5b", "#c9ccd1", "#eef0f3"  # timeline colours: held, seen then evicted, not seen
ALERT = "#d62728"  # marks of the alerts of standing questions
SHOWN_ALERTS = 5  # alerts the alert box lists (the latest); all of them are in the chat and on the timeline


def mb(n_bytes: float | None) -> str:
    """Bytes as megabytes with 2 decimals ('-' for None)."""
    return "-" if n_bytes is None else f"{n_bytes / MB:.2f}"


def kv_figure(samples: Sequence, budget_bytes: int | None = None, alert_times: Sequence[float] = ()) -> Figure:
    """KV MB (left axis) and RSS MB (right axis) against video seconds; samples have
    `.video_time_s`, `.kv_bytes`, `.rss_bytes`. A dashed line marks the budget when there is one, a red
    dotted line each alert of a standing question."""
    fig = Figure(figsize=(6.0, 2.6), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("KV memory over video time (flat = bounded)", fontsize=10)
    ax.set_xlabel("video time (s)")
    ax.set_ylabel("KV cache (MB)", color="tab:blue")
    ax.grid(alpha=0.3)
    if not samples:
        ax.text(0.5, 0.5, "no frames yet", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        return fig
    t = [s.video_time_s for s in samples]
    kv = [s.kv_bytes / MB for s in samples]
    rss = [s.rss_bytes / MB for s in samples]
    ax.plot(t, kv, color="tab:blue", marker="." if len(t) < 40 else None, label="KV cache")
    top = max(kv)
    if budget_bytes:
        ax.axhline(budget_bytes / MB, color="tab:blue", linestyle="--", linewidth=1, label="budget")
        top = max(top, budget_bytes / MB)
    ax.set_ylim(0, top * 1.15 or 1)
    ax.set_xlim(min(t), max(max(t), min(t) + 1))
    for i, at in enumerate(alert_times):
        ax.axvline(at, color=ALERT, linestyle=":", linewidth=1.2, label="alert" if i == 0 else "_alert")
    ax2 = ax.twinx()
    ax2.plot(t, rss, color="tab:orange", alpha=0.7, linewidth=1, label="process RSS")
    ax2.set_ylabel("RSS (MB)", color="tab:orange")
    ax2.set_ylim(0, max(rss) * 1.15 or 1)
    lines = [line for line in ax.get_lines() + ax2.get_lines() if not line.get_label().startswith("_")]
    ax.legend(lines, [line.get_label() for line in lines], loc="lower right", fontsize="small")
    return fig


def timeline_bins(video_times: Sequence[float], duration_s: float, n_bins: int = 120) -> list[bool]:
    """Split [0, duration_s] into `n_bins` equal bins; True where some held frame time falls in it.

    Times past the end land in the last bin, negative ones in the first; duration <= 0 gives no held bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins!r}")
    bins = [False] * n_bins
    if not duration_s or duration_s <= 0 or not math.isfinite(duration_s):
        return bins
    for t in video_times:
        if t is None or not math.isfinite(t):
            continue
        i = int(t / duration_s * n_bins)
        bins[min(max(i, 0), n_bins - 1)] = True
    return bins


def runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive True values."""
    out, start = [], None
    for i, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    return out


def timeline_html(video_times: Sequence[float], duration_s: float | None, seen_s: float, n_bins: int = 120,
                  alerts: Sequence = ()) -> str:
    """An HTML strip over [0, duration]: green = still held in the cache, grey = seen and evicted,
    light = not seen yet; a red tick at each alert of a standing question (`alerts`: `streamer.watch.Alert`,
    its text as a tooltip). `duration_s` None (a live webcam) uses the time seen so far."""
    span = duration_s if duration_s and duration_s > 0 else seen_s
    held = sorted(set(video_times))
    if not span or span <= 0:
        body = f'<div style="height:22px;background:{UNSEEN};border-radius:4px"></div>'
        caption = "no video yet"
    else:
        seen_pct = min(100.0, 100.0 * seen_s / span) if duration_s else 100.0
        parts = [f'<div style="position:absolute;left:0;top:0;bottom:0;width:{seen_pct:.2f}%;background:{SEEN}"></div>']
        for a, b in runs(timeline_bins(held, span, n_bins)):
            parts.append(
                f'<div class="held" style="position:absolute;top:0;bottom:0;left:{100 * a / n_bins:.2f}%;'
                f'width:{100 * (b - a) / n_bins:.2f}%;background:{HELD}"></div>'
            )
        for alert in alerts:
            at = min(100.0, 100.0 * alert.video_time_s / span)
            parts.append(f'<div class="alert-mark" data-t="{alert.video_time_s:g}" title="{html.escape(alert_text(alert))}" '
                         f'style="position:absolute;top:0;bottom:0;left:calc({at:.2f}% - 1px);width:2px;'
                         f'background:{ALERT}"></div>')
        body = (f'<div style="position:relative;height:22px;background:{UNSEEN};border-radius:4px;overflow:hidden">'
                + "".join(parts) + "</div>")
        caption = (f"{len(held)} frame time(s) held, seen up to {seen_s:.1f} s"
                   + (f" of {duration_s:.1f} s" if duration_s else " (live)"))
    legend = (f'<span style="color:{HELD}">&#9632;</span> held in cache &nbsp; '
              f'<span style="color:{SEEN}">&#9632;</span> seen, evicted &nbsp; '
              f'<span style="color:#b0b4ba">&#9633;</span> not seen yet'
              + (f' &nbsp; <span style="color:{ALERT}">|</span> alert' if alerts else ""))
    ends = (f'<div style="display:flex;justify-content:space-between;font-size:11px;color:#666">'
            f'<span>0 s</span><span>{html.escape(caption)}</span><span>{span or 0:.0f} s</span></div>')
    return f'<div class="timeline" data-held="{len(held)}">{body}{ends}<div style="font-size:11px">{legend}</div></div>'


def layer_budget_html(tokens_per_layer: Sequence[int], layer_budgets: Sequence[int | None]) -> str:
    """One thin bar per layer: tokens held against that layer's budget (AirCache may give layers
    different budgets); a layer without a budget (full cache) shows its token count only."""
    if not tokens_per_layer:
        return "<div>no layers yet</div>"
    top = max([b or 0 for b in layer_budgets] + list(tokens_per_layer)) or 1
    rows = []
    for i, held in enumerate(tokens_per_layer):
        budget = layer_budgets[i] if i < len(layer_budgets) else None
        width = 100 * held / top
        limit = f" / {budget}" if budget else " (no limit)"
        mark = (f'<div style="position:absolute;top:0;bottom:0;left:{100 * budget / top:.1f}%;width:2px;'
                f'background:#333"></div>') if budget else ""
        rows.append(
            f'<div class="layer" style="display:flex;align-items:center;gap:6px;font-size:11px;line-height:12px">'
            f'<span style="width:28px">L{i}</span>'
            f'<div style="position:relative;flex:1;height:8px;background:{UNSEEN}">'
            f'<div style="width:{width:.1f}%;height:100%;background:#4c78a8"></div>{mark}</div>'
            f'<span style="width:90px;text-align:right">{held}{limit}</span></div>'
        )
    return '<div class="layers">' + "".join(rows) + "</div>"


def stats_html(stats: dict) -> str:
    """The key numbers of a `StreamSession.stats()` dict as a grid of small cards."""
    budget = stats.get("budget")
    kept = stats.get("kept_by_modality") or {}
    cards = [
        ("kv", "KV tokens / budget", f"{stats.get('kv_tokens', 0)} / {budget if budget else 'no limit'}"),
        ("kv_mb", "KV MB (budget, peak)", f"{mb(stats.get('kv_bytes'))} ({mb(stats.get('budget_bytes'))}, "
                                           f"{mb(stats.get('peak_kv_bytes'))})"),
        ("frames", "frames ingested", str(stats.get("frames_ingested", 0))),
        ("skipped", "frames skipped (unchanged)",
         "off" if "skip_static" in stats and stats["skip_static"] is None else str(stats.get("frames_skipped", 0))),
        ("video", "video time (s)", f"{stats.get('video_time_s', 0.0):.1f}"),
        ("evicted", "evicted", str(stats.get("evicted", 0))),
        ("merged", "merged", str(stats.get("merged", 0))),
        ("rss", "process RSS (MB)", f"{(stats.get('rss_bytes') or 0) / MB:.0f}"),
        ("kept", "kept: text / image / other",
         f"{kept.get('text', 0)} / {kept.get('image', 0)} / {kept.get('other', 0)}"),
    ]
    if "lag_s" in stats:  # a live source (`streamer.pipeline`)
        cards += [("lag_s", "lag behind live (s)", f"{stats['lag_s']:.1f}"),
                  ("frames_dropped", "frames dropped to keep up", str(stats["frames_dropped"]))]
    cells = "".join(
        f'<div style="padding:4px 6px;border:1px solid #ddd;border-radius:6px">'
        f'<div style="font-size:11px;color:#666">{html.escape(label)}</div>'
        f'<div data-stat="{key}" style="font-size:16px;font-weight:600">{html.escape(value)}</div></div>'
        for key, label, value in cards
    )
    return f'<div class="stats" style="display:grid;grid-template-columns:repeat(4,1fr);gap:6px">{cells}</div>'


def chat_text(text: str) -> str:
    """A question or an answer as the chat shows it: escaped, so markup typed into a question or read off a
    video is shown as the text it is, never rendered (the chat renders no Markdown either); line breaks kept."""
    return html.escape(text).replace("\n", "<br>")


def status_html(message: str, progress: float | None = None, error: str | None = None) -> str:
    """A status line with an optional progress bar (0..1) and an optional error shown in red."""
    bar = ""
    if progress is not None:
        pct = 100 * min(1.0, max(0.0, progress))
        bar = (f'<div style="height:6px;background:{UNSEEN};border-radius:3px;margin-top:3px">'
               f'<div class="progress" data-pct="{pct:.0f}" style="width:{pct:.1f}%;height:100%;'
               f'background:#4c78a8;border-radius:3px"></div></div>')
    err = (f'<div class="error" style="color:#b00020;font-weight:600">error: {html.escape(error)}</div>'
           if error else "")
    return f'<div class="status"><div>{html.escape(message)}</div>{bar}{err}</div>'


def alert_text(alert) -> str:
    """An alert (`streamer.watch.Alert`) as one line of plain text: time, question, answer, confidence."""
    return (f"🔔 [{format_timestamp(alert.video_time_s)}] {alert.question} -> {alert.answer or '(no words)'} "
            f"({alert.confidence:.2f})")


def alerts_html(alerts: Sequence, serial: int) -> str:
    """The page's alert box: how many alerts this video has fired and the latest `SHOWN_ALERTS`, newest first.
    `serial` counts every alert the session has had (over all its videos): the page's script notifies when it
    grows (`app/page_js.py`)."""
    if not alerts:
        rows = '<div style="color:#666">no alert yet</div>'
    else:
        rows = "".join(f'<div class="alert" style="color:{ALERT}">{html.escape(alert_text(a))}</div>'
                       for a in reversed(alerts[-SHOWN_ALERTS:]))
    head = f"{len(alerts)} alert(s) for this video" + (f", latest {SHOWN_ALERTS} shown" if len(alerts) > SHOWN_ALERTS else "")
    return (f'<div class="alerts" data-count="{len(alerts)}" data-serial="{serial}" style="font-size:13px">'
            f'<div style="font-size:11px;color:#666">{head}</div>{rows}</div>')
