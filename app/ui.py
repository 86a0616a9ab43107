"""Gradio web UI: chat about an uploaded video or a live webcam while the model is still watching it.

    python -m streamer.app.ui [--model tiny] [--budget N] [--policy combined] [--host 127.0.0.1] [--port 7860]

What the page does: an uploaded video is ingested by a background thread (progress in the status line);
the webcam streams frames from the browser at the target fps; questions can be asked at any time and
are answered token by token from what the cache holds so far (multi-turn; "Clear" forgets chat and
cache). A panel refreshed every second shows the KV cache: tokens and MB against the budget, frames,
evicted and merged counts, KV bytes over video time, a timeline of the moments still held, and the
per-layer budgets. Standing questions ("tell me when ...", `app/watches.py`) are asked after every chunk;
their alerts appear in the chat, in an alert box and as marks on the timeline and the plot.

One model is loaded once and shared; each browser session (Gradio `session_hash`) has its own
`StreamSession`, chat and feed thread (`app/state.py`), dropped a grace period after its tab closes or
loses its connection (a page that reconnects gets it back), or when it goes unused (`app/sessions.py`:
slot limits per server and per client); all model calls take one shared lock. A session is made by the
first video or webcam frame, not by a question or a page view. User errors (unreadable upload, question
too long or before any video, server full) show as Gradio error messages and keep the chat; a bad option
or an address the server cannot listen on is one line on stderr and exit code 2. Upload size limit:
`--max-upload-mb` (default 200 MB), enforced by Gradio (`launch(max_file_size=...)`) before a file reaches
the app; frames and the chat have bounds too (`app/limits.py`, `app/chat.py`). Sharing is off unless `--share`.

Not here: per-session state and threads (`app/state.py`), session slots (`app/sessions.py`), figures and
HTML (`app/plots.py`), the model and cache (`models/`, `streamer/`).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # python -m streamer.app.ui: run_main imports this module again, with Ctrl-C handled
    from streamer.entry import run_main

    sys.exit(run_main("streamer.app.ui"))

import argparse  # noqa: E402 (the imports below take seconds; Ctrl-C during them is run_main's)
import dataclasses
import errno
import html
import logging
import socket
from pathlib import Path

import gradio as gr

from streamer.app import limits, plots, watches
from streamer.app.page_js import NOTIFY_JS, TAB_ID_JS, WEBCAM_ERRORS_JS
from streamer.app.sessions import SESSION_ENDED, SessionRegistry
from streamer.app.state import NO_VIDEO, UiSettings, UserSession
from streamer.entry import run_main
from streamer.errors import ConfigError, StreamerError
from streamer.kv_window import POLICIES, WindowConfig
from streamer.text import printable
from streamer.video.frame import VideoSource
from streamer.options import (
    DEFAULT_BUDGET, FPS, MAX_NEW_TOKENS, OneLineParser, add_cache_options, add_model_options, int_in, skip_config,
    window_config,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 200
UI_BUDGET = 512  # tokens per layer the page starts with (the CLI's 2048 never fills on the one-minute sample)
MAX_SESSIONS = 1024  # --max-sessions and --max-sessions-per-client accept 1 to this
# Gradio keeps, for every session_hash it has seen, a copy of the page's config and the last value of each
# output (about 80 KB here: the panel HTML, the plot as a PNG), up to `state_session_capacity` hashes, the
# least recently used dropped first. Its default, 10000, grew the server by ~8 MB per 100 closed sessions
# (~0.8 GB before it levels off); this app reads none of it back, so a few per session slot are enough.
STATE_SESSIONS_PER_SLOT = 4
IDLE_STATUS = "Upload a video or start the webcam, then ask about it at any time."


def toast(message: str, title: str = "Error") -> gr.Error:
    """A user error as a toast: escaped (a toast renders HTML), and one line in the server's log with -v, never
    a traceback (Gradio prints one for every gr.Error unless told not to)."""
    log.info("%s: %s", title, message)
    return gr.Error(html.escape(message, quote=False), title=title, print_exception=False)


def build_demo(adapter=None, *, model: str = "tiny", window: WindowConfig | None = None,
               settings: UiSettings | None = None, device: str | None = None, dtype: str | None = None,
               stream: tuple[VideoSource, str] | None = None) -> gr.Blocks:
    """The app. `adapter` (a loaded ModelAdapter) is shared by every session; without one `model`
    is loaded here, once. The session registry is reachable as `demo.registry` (tests, admin).

    `stream`: (an opened server-side source, its name): ingested once for every page, which asks about it on
    a fork of its own (the "Shared stream" tab); `demo.shared` is its session."""
    if adapter is None:
        from streamer.models.registry import load_model  # heavy import, after argument errors

        adapter = load_model(model, device=device, dtype=dtype)
    window = window or window_config(build_parser().parse_args([]), adapter.describe()["max_position_embeddings"])
    settings = settings or UiSettings()
    registry = SessionRegistry(adapter, window, settings)
    shared = registry.share(*stream) if stream is not None else None
    info = adapter.describe()

    def user_of(request: gr.Request, create: bool = True) -> UserSession | None:
        if request is None or not request.session_hash:
            raise toast("this action needs a browser or client session")
        client = request.client.host if request.client else ""
        try:
            return registry.get(request.session_hash, create=create, client=client)
        except StreamerError as err:
            raise toast(str(err)) from None

    def chosen_window(policy: str | None, budget) -> WindowConfig:
        """The cache settings picked on the page (policy name or spec, budget), checked; gr.Error if bad."""
        try:  # None (an API client that leaves them out): the server's settings
            budget = window.budget or DEFAULT_BUDGET if budget is None else budget
            if float(budget) != int(float(budget)):
                raise ConfigError(f"the budget must be a whole number of tokens, got {budget!r}")
            policy = (policy or window.policy).strip()
            return dataclasses.replace(window, policy=policy, budget=None if policy == "full" else int(budget),
                                       **({"redundancy": None} if policy == "full" else {}))
        except (ConfigError, ValueError, TypeError) as err:
            raise toast(str(err), "Cache settings") from None

    def on_upload(path: str | None, policy: str, budget, request: gr.Request):
        if not path:
            return gr.skip()
        chosen = chosen_window(policy, budget)
        name = Path(path).name
        try:
            source = limits.open_upload(path, name, settings.max_frame_pixels)
        except StreamerError as err:  # the old video, its cache and the chat stay as they were
            raise toast(str(err), "Cannot read this video") from None
        try:
            user = user_of(request)  # only a readable video takes a session slot
            user.start_video(source, name, chosen)
        except gr.Error:
            source.close()
            raise
        except StreamerError as err:  # a budget the model cannot take: nothing changed
            source.close()
            raise toast(str(err), "Cache settings") from None
        return []  # a new video starts a new conversation; the status line follows on the next tick

    def on_video_cleared(request: gr.Request):
        user = user_of(request, create=False)
        if user is not None:
            user.stop_feed()

    def on_frame(frame: dict | None, policy: str, budget, request: gr.Request):
        if not frame:  # the frame as sent (not preprocessed): its size is checked before it is decoded
            return gr.skip()
        chosen = chosen_window(policy, budget)
        try:
            image = limits.decode_frame(frame, settings.max_frame_pixels, settings.max_side)
            user = user_of(request)  # only a readable frame takes a session slot
            started = user.push_webcam(image, chosen) == "started"
        except limits.FrameTooLargeError as err:
            raise toast(str(err), "Frame too large") from None
        except ConfigError as err:
            raise toast(str(err), "Cache settings") from None
        except ValueError as err:  # an odd frame from the browser: skip it, keep streaming
            log.debug("webcam frame skipped: %s", err)
            return gr.skip()
        return [] if started else gr.skip()  # a new webcam feed starts a new conversation

    def on_ask(question: str, request: gr.Request):
        question = (question or "").strip()
        if not question:
            raise toast("type a question first")
        user = user_of(request, create=False)  # a question alone takes no session slot
        if user is None:
            raise toast(SESSION_ENDED if registry.ended(request.session_hash) else NO_VIDEO, "Cannot answer")
        yield from write_answer(user, user.chat, question, user.ask)

    def on_shared_ask(question: str, request: gr.Request):
        question = (question or "").strip()
        if not question:
            raise toast("type a question first")
        user = user_of(request)  # this page's turns about the shared stream live in its session
        yield from write_answer(user, user.shared_chat, question, lambda q: user.ask_shared(shared, q))

    def write_answer(user: UserSession, chat, question: str, ask):
        """Stream `ask(question)` into `chat` as the page shows it (its last turns only, app/chat.py)."""
        shown = chat.shown(settings.chat_window)
        asked = {"role": "user", "content": plots.chat_text(question)}
        answer = ""
        with user.writing_chat():  # the refresh that brings alerts leaves the chat to this answer
            yield [*shown, asked, {"role": "assistant", "content": "..."}], ""
            try:
                for piece in ask(question):
                    answer += piece
                    yield [*shown, asked, {"role": "assistant", "content": plots.chat_text(answer)}], ""
            except StreamerError as err:
                yield shown, question  # the chat as it was, the question back in the box to edit
                raise toast(str(err), "Cannot answer") from None
            chat.add(question, answer)  # a chat cleared meanwhile is no longer the session's: this turn goes with it
            yield chat.shown(settings.chat_window), ""

    def on_shared_clear(request: gr.Request):
        user = user_of(request, create=False)
        if user is not None:
            user.clear_shared()
        return []

    def shared_status():
        return feed_status(shared)

    def on_clear(request: gr.Request):
        user = user_of(request, create=False)
        if user is not None:
            user.clear()
        return []

    def on_show_all(request: gr.Request):
        user = user_of(request, create=False)
        return gr.Textbox(value=user.chat.text() if user is not None else "", visible=True)

    def refresh(request: gr.Request):
        user = user_of(request, create=False)
        if user is None:
            empty = {"frames_ingested": 0, "kv_tokens": 0, "budget": window.budget}
            ended = registry.ended(request.session_hash)  # say so: a page that lost its session must not look empty
            line = plots.status_html("Session ended.", error=SESSION_ENDED) if ended else plots.status_html(IDLE_STATUS)
            return (line, plots.stats_html(empty), gr.skip(),
                    plots.timeline_html([], None, 0.0), plots.layer_budget_html([], []), empty)
        for message in user.pop_errors():
            gr.Warning(html.escape(message, quote=False))  # a toast renders HTML; a file name is text
        stats = user.stats
        plot, alerts = gr.skip(), user.session.alerts
        if (user.history.version, user.alert_serial) != user.plot_version:
            user.plot_version = (user.history.version, user.alert_serial)
            plot = plots.kv_figure(user.history.samples(), stats.get("budget_bytes"),
                                   [a.video_time_s for a in alerts])
        duration = user.feed.duration_s if user.feed is not None else None
        return (
            feed_status(user), plots.stats_html(stats), plot,
            plots.timeline_html(stats["video_times"], duration, stats["video_time_s"], alerts=alerts),
            plots.layer_budget_html(stats["tokens_per_layer"], stats["layer_budgets"]), stats,
        )

    def on_page_load(tab: str | None, request: gr.Request):
        """A page loaded: if Gradio reloaded it after its connection dropped, it gets its session back."""
        if not (request and request.session_hash and isinstance(tab, str) and 0 < len(tab) <= 64):
            return gr.skip(), gr.skip()
        user = registry.attach(request.session_hash, tab)
        if user is None:
            if registry.ended(tab):
                gr.Warning(f"This tab's video, cache and chat have ended: its connection was lost for longer than "
                           f"the server waits ({settings.reconnect_grace_s:g} s). Load a video to start again.")
            return gr.skip(), gr.skip()
        user.alert_box = None  # the new page starts with an empty alert box: the refresh fills it
        return user.chat.shown(settings.chat_window), watches.listed(user)

    def on_unload(request: gr.Request):  # the page closed or its connection dropped: kept a while to reconnect
        if request is not None and request.session_hash:
            registry.detach(request.session_hash)

    with gr.Blocks(title="Video chat, bounded KV cache", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown(
            f"## Video chat with a bounded KV cache\n"
            f"Model **{info['name']}** ({info['family']}, {info['n_layers']} layers"
            + (", int8 vision tower" if info["speed"] == "int8" else "") + ") · policy "
            f"**{window.policy}** · budget **{window.budget or 'none'}** tokens per layer "
            f"({window.layer_budget}) · "
            + ("" if window.resolved.redundancy is None
               else f"repeated frame tokens evicted first (cosine >= {window.resolved.redundancy:g}) · ")
            + f"{settings.fps:g} frame(s) per second of video"
        )
        if getattr(adapter, "note", None):
            gr.Markdown(f"> **Note:** {adapter.note}.")
        with gr.Row():
            with gr.Column(scale=5):
                with gr.Accordion("Cache settings (apply to the next video or webcam)", open=False):
                    with gr.Row():
                        policy_box = gr.Dropdown(
                            choices=list(POLICIES), value=window.policy, allow_custom_value=True, scale=3,
                            label="policy: a name, or scorer parts joined by + (e.g. knorm+pool=9)", elem_id="policy")
                        budget_box = gr.Number(value=window.budget or DEFAULT_BUDGET, precision=0, minimum=8, scale=1,
                                               label="budget (tokens per layer)", elem_id="budget")
                with gr.Tab("Video file"):
                    video = gr.Video(sources=["upload"], label="Upload a video", height=240, elem_id="video")
                with gr.Tab("Webcam"):
                    gr.Markdown("Allow camera access when the browser asks, then press Record to stream; "
                                f"frames are taken at {settings.fps:g} per second.")
                    gr.HTML('<div class="cam-error" style="display:none;color:#b00020;font-weight:600"></div>',
                            elem_id="cam-error")
                    cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", height=240,
                                   elem_id="webcam")
                if shared is not None:
                    shared_parts = shared_tab(shared.feed.label)
                status = gr.HTML(plots.status_html(IDLE_STATUS), label="status", elem_id="status")
                # questions and answers are text: escaped by plots.chat_text, no Markdown
                chatbot = gr.Chatbot(label="Chat", height=320, elem_id="chat", feedback_options=None,
                                     render_markdown=False)
                with gr.Row():
                    question = gr.Textbox(label="question", show_label=False, scale=5, max_lines=4,
                                          placeholder="Ask about what has been seen so far...",
                                          elem_id="question", submit_btn=False)
                    ask_btn = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                with gr.Row():
                    clear_btn = gr.Button("Clear chat and cache", size="sm", elem_id="clear")
                    show_all_btn = gr.Button("Show the whole chat", size="sm", elem_id="show-all")
                whole = gr.Textbox(label="the whole chat (select and copy)", visible=False, interactive=False,
                                   lines=8, max_lines=20, buttons=["copy"], elem_id="whole-chat")
                panel = watches.build_panel()
            with gr.Column(scale=4):
                gr.Markdown("### What the cache remembers")
                stats_box = gr.HTML(plots.stats_html({}), label="stats", elem_id="stats")
                timeline = gr.HTML(plots.timeline_html([], None, 0.0), label="timeline", elem_id="timeline")
                plot = gr.Plot(label="KV memory", show_label=False, elem_id="kv-plot")
                with gr.Accordion("Per-layer budgets", open=True):
                    layers = gr.HTML(plots.layer_budget_html([], []), label="layers", elem_id="layers")
                with gr.Accordion("Raw stats", open=False):
                    raw = gr.JSON(label="raw stats", elem_id="raw-stats")
        timer = gr.Timer(1.0)

        # Events that write the chat show no progress, and not on the chat (show_progress_on): an error is
        # then only a toast and the chat stays visible (Gradio would cover a Chatbot with an "Error" badge)
        quiet = dict(show_progress="hidden", show_progress_on=[question])
        video.upload(on_upload, [video, policy_box, budget_box], [chatbot], api_name="load_video", **quiet)
        video.clear(on_video_cleared, None, None, api_name=False)
        cam.stream(on_frame, [cam, policy_box, budget_box], [chatbot], stream_every=min(0.5, 0.5 / settings.fps), time_limit=None,
                   concurrency_limit=None, api_name="webcam_frame", preprocess=False, **quiet)
        ask_btn.click(on_ask, [question], [chatbot, question], api_name="ask", **quiet)
        question.submit(on_ask, [question], [chatbot, question], api_name=False, **quiet)
        clear_btn.click(on_clear, None, [chatbot], api_name="clear", **quiet)
        show_all_btn.click(on_show_all, None, [whole], api_name="whole_chat", show_progress="hidden")
        # the status line is an output of the tick only: an output shared with a visible-progress
        # event would flash Gradio's progress timer in it every second
        timer.tick(refresh, None, [status, stats_box, plot, timeline, layers, raw], api_name="refresh",
                   show_progress="hidden")
        watches.wire(panel, chatbot, timer, settings.chat_window, user_of, toast)
        if shared is not None:
            shared_box, shared_chat, shared_question, shared_ask, shared_clear = shared_parts
            shared_ask.click(on_shared_ask, [shared_question], [shared_chat, shared_question], api_name="shared_ask",
                             show_progress="hidden", show_progress_on=[shared_question])
            shared_question.submit(on_shared_ask, [shared_question], [shared_chat, shared_question], api_name=False,
                                   show_progress="hidden", show_progress_on=[shared_question])
            shared_clear.click(on_shared_clear, None, [shared_chat], api_name="shared_clear", show_progress="hidden")
            timer.tick(shared_status, None, [shared_box], api_name="shared_status", show_progress="hidden")
        demo.unload(on_unload)
        demo.load(None, None, None, js=WEBCAM_ERRORS_JS)
        demo.load(None, None, None, js=NOTIFY_JS)
        tab_id = gr.Textbox(visible=False, elem_id="tab-id")
        demo.load(on_page_load, [tab_id], [chatbot, panel.watches], js=TAB_ID_JS, api_name=False,
                  show_progress="hidden")
    demo.queue(default_concurrency_limit=None)  # the model lock serializes model use, not Gradio
    demo.registry, demo.shared = registry, shared
    return demo


def shared_tab(label: str):
    """The "Shared stream" tab's parts: status line, chat, question box, Ask and Clear buttons."""
    with gr.Tab("Shared stream", elem_id="shared-tab"):
        gr.Markdown(f"Everyone on this server watches **{html.escape(label)}**, read once for all; your questions "
                    "and answers here are yours alone.")
        box = gr.HTML(plots.status_html("Starting the shared stream..."), elem_id="shared-status")
        chat = gr.Chatbot(label="Chat about the shared stream", height=240, elem_id="shared-chat",
                          feedback_options=None, render_markdown=False)
        with gr.Row():
            question = gr.Textbox(show_label=False, scale=5, max_lines=4, elem_id="shared-question", submit_btn=False,
                                  placeholder="Ask about the shared stream...")
            ask = gr.Button("Ask", variant="primary", scale=1, elem_id="shared-ask")
        clear = gr.Button("Clear this chat", size="sm", elem_id="shared-clear")
    return box, chat, question, ask, clear


def feed_status(user: UserSession) -> str:
    """The status line for a user's current feed (progress bar for a file of known length)."""
    feed, stats = user.feed, user.stats
    if feed is None:
        return plots.status_html(IDLE_STATUS)
    frames, t = feed.frames, stats["video_time_s"]
    if feed.kind == "webcam":
        state = {"running": "streaming", "stopped": "stopped", "done": "ended", "error": "failed"}[feed.state]
        text = f"Webcam {state}: {frames} frame(s) ingested, {t:.1f} s of live video."
        live = feed.pipeline.live_stats() if feed.pipeline else None
        if live and (live["lag_s"] >= 1 or live["frames_dropped"]):
            text += (f" The model is {live['lag_s']:.0f} s behind live (lag_s); {live['frames_dropped']} frame(s) "
                     f"dropped to keep up (frames_dropped), sampling at {live['sampling_fps']:g} fps.")
        return plots.status_html(text, error=feed.error)
    progress = min(1.0, frames / feed.expected_frames) if feed.expected_frames else None
    total = f" of {feed.duration_s:.1f} s" if feed.duration_s else ""
    text = {
        "running": f"Watching {feed.label}: {frames}/{feed.expected_frames or '?'} frames, {t:.1f} s{total}. "
                   "Ask at any time.",
        "done": f"Watched all of {feed.label}: {frames} frames. Ask away." if not feed.source.cut else
                f"Watched {feed.label} up to {t:.1f} s{total}, where the file is cut short: {frames} frames. "
                "Ask away.",
        "stopped": f"Stopped watching {feed.label} after {frames} frames.",
        "error": f"Stopped watching {feed.label} after {frames} frames.",
    }[feed.state]
    if user.webcam_active():
        text += " Webcam frames are ignored while a video plays: stop the webcam stream."
    return plots.status_html(text, progress=progress, error=feed.error)


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, **kwargs):
    """`demo.launch` with this app's defaults: local only, no share link, upload size limit. An address
    the server cannot listen on (port in use, a host that is not this machine's) raises ConfigError."""
    try:
        return demo.launch(server_name=host, server_port=port, share=share,
                           max_file_size=max_upload_mb * 1024 * 1024, ssr_mode=False, footer_links=["api"],
                           state_session_capacity=STATE_SESSIONS_PER_SLOT * demo.registry.settings.max_sessions,
                           **kwargs)
    except OSError as err:
        where = f"{host}:{port}" if port else host
        if "empty port" in str(err):  # Gradio's words for every bind failure: say what it can be
            raise ConfigError(f"cannot listen on {where}: the port is in use or {host} is not an address of "
                              "this machine") from None
        raise ConfigError(f"cannot start the server on {where}: {err}") from None


def check_address(host: str, port: int) -> None:
    """Raise ConfigError, naming the option, when the server could not listen on host:port. Checked
    before the slow model load; `launch` still reports the rare port taken in between."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ConfigError(f"--host {host!r} is not a known host name or address ({err})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            probe.bind(address)
        except OSError as err:
            reasons = {
                errno.EADDRINUSE: f"--port {port} is already in use on {host}; stop the other server or pick "
                                  "another --port",
                errno.EADDRNOTAVAIL: f"--host {host} is not an address of this machine; use 127.0.0.1 (this "
                                     "machine only) or 0.0.0.0 (every interface)",
                errno.EACCES: f"--port {port} needs administrator rights (ports below 1024); pick a port from "
                              "1024 to 65535",
            }
            raise ConfigError(reasons.get(err.errno, f"cannot listen on {host}:{port}: {err.strerror}")) from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m streamer.app.ui", description=__doc__.split("\n\n")[0])
    add_model_options(p)
    add_cache_options(p)
    p.set_defaults(budget=UI_BUDGET)  # the page starts where the one-minute sample evicts; the page can change it
    p.add_argument("--fps", type=FPS, default=1.0, help="frames per second of video to keep")
    p.add_argument("--max-new-tokens", type=MAX_NEW_TOKENS, default=64, help="longest answer in tokens")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int_in(1, 65535), default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--max-upload-mb", type=int_in(1, 10**6), default=DEFAULT_MAX_UPLOAD_MB,
                   help="largest upload accepted")
    p.add_argument("--max-sessions", type=int_in(1, MAX_SESSIONS), default=16, help="sessions held at once")
    p.add_argument("--max-sessions-per-client", type=int_in(1, MAX_SESSIONS), default=None,
                   help="sessions one client address may hold (default: a quarter of --max-sessions; behind a "
                        "reverse proxy that does not pass the client address, set it to --max-sessions)")
    p.add_argument("--reconnect-grace", type=int_in(0, 86400), default=120, metavar="S",
                   help="seconds a page whose connection dropped keeps its session to reconnect (0: drop it at once)")
    p.add_argument("--stream", metavar="SOURCE", default=None,
                   help="a video file, URL or camera (/dev/video0) on the server that every page watches in a "
                        "\"Shared stream\" tab: read once, each page asking on its own fork of it")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    return p


def run(args: argparse.Namespace) -> int:
    settings = UiSettings(fps=args.fps, max_new_tokens=args.max_new_tokens, max_sessions=args.max_sessions,
                          max_sessions_per_client=args.max_sessions_per_client, skip=skip_config(args),
                          reconnect_grace_s=float(args.reconnect_grace))
    window_config(args)  # bad cache options and addresses fail before the slow model load
    check_address(args.host, args.port)
    stream = None
    if args.stream is not None:  # a source that cannot be opened fails before the slow model load
        from streamer.frames import open_source

        stream = (open_source(args.stream), printable(Path(args.stream).name or args.stream))
    from streamer.models.registry import load_model

    adapter = load_model(args.model, device=args.device, dtype=args.dtype, speed=args.speed)
    window = window_config(args, adapter.describe()["max_position_embeddings"])
    demo = build_demo(adapter, window=window, settings=settings, stream=stream)
    launch(demo, args.host, args.port, args.share, args.max_upload_mb, prevent_thread_lock=True)
    print(f"serving on http://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    demo.block_thread()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("streamer.app.ui", argv)
