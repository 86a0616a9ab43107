"""Standing questions in the web UI ("tell me when ..."): the panel that adds and removes them, the alert box,
the "Notify me" switch, and the 1 s refresh that brings new alerts to the page.

A standing question belongs to the browser session (`StreamSession.watch`): it is asked after every chunk
the session's feed ingests, stays when a new video or the webcam starts (the session is reset, not
replaced) and when the chat is cleared; the alerts are those of the current video. An alert goes into the
chat as the feed takes it (`UserSession._take_alerts`); `refresh` sends the page the chat when an alert came
and the alert box when it changed, so each alert reaches the page once. The marks on the cache panel's
timeline and plot are drawn by the panel's own refresh (`app/ui.py`). "Notify me" is the page's business
only (`page_js.NOTIFY_JS`): it beeps and shows a browser notification when the alert box's count grows.

Not here: asking the questions and debouncing (`streamer/watch.py`), the chat (`app/chat.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from streamer.app import plots
from streamer.app.state import UserSession
from streamer.errors import StreamerError
from streamer.text import check_question
from streamer.watch import MAX_WATCHES

NO_WATCHES = "no standing question yet"


@dataclass
class WatchPanel:
    """The components of the standing-question panel."""

    question: gr.Textbox
    add: gr.Button
    watches: gr.Radio
    remove: gr.Button
    alerts: gr.HTML


def build_panel() -> WatchPanel:
    """Lay out the panel inside the current Gradio block."""
    with gr.Accordion("Standing questions: tell me when ...", open=True, elem_id="watch-panel"):
        with gr.Row():
            question = gr.Textbox(label="standing question", show_label=False, scale=5, max_lines=2,
                                  placeholder="A yes/no question asked after every chunk, e.g. Is there a red "
                                              "circle on screen?", elem_id="watch-question", submit_btn=False)
            add = gr.Button("Watch", scale=1, elem_id="watch")
        watches = gr.Radio(choices=[], label=watches_label([]), elem_id="watches")
        with gr.Row():
            remove = gr.Button("Stop watching", size="sm", elem_id="unwatch")
            # read by the page's script only (page_js.NOTIFY_JS): notifying is the browser's business
            gr.Checkbox(label="Notify me (a beep and a browser notification at each alert)", value=False,
                        elem_id="notify")
        alerts = gr.HTML(plots.alerts_html([], 0), elem_id="alerts")
    return WatchPanel(question, add, watches, remove, alerts)


def watches_label(watches: list[str]) -> str:
    said = f"{len(watches)} standing question(s)" if watches else NO_WATCHES
    return f"{said} (at most {MAX_WATCHES}; pick one to stop it)"


def listed(user: UserSession | None) -> gr.Radio:
    """The standing questions of `user` as the panel lists them."""
    watches = user.session.watches if user is not None else []
    return gr.Radio(choices=watches, value=None, label=watches_label(watches))


def wire(panel: WatchPanel, chatbot: gr.Chatbot, timer: gr.Timer, chat_window: int,
         user_of: Callable[..., UserSession | None], toast: Callable[..., gr.Error]) -> None:
    """Connect the panel's events and the alert refresh; `user_of(request, create=...)` and `toast(message,
    title)` are the page's (app/ui.py)."""

    def on_watch(question: str, request: gr.Request):
        question = (question or "").strip()
        if not question:
            raise toast("type a yes/no question to watch for first", "Cannot watch")
        try:
            check_question(question)  # text that is no question takes no session slot
            user = user_of(request)  # one that may be takes a slot, as a video does: it needs a session to wait in
            user.session.watch(question)
        except StreamerError as err:  # not a question, too long for the budget, too many
            raise toast(str(err), "Cannot watch") from None
        return listed(user), ""

    def on_unwatch(question: str | None, request: gr.Request):
        if not question or not isinstance(question, str):  # not preprocessed: whatever a client sent
            raise toast("pick the standing question to stop first", "Cannot stop watching")
        user = user_of(request, create=False)
        try:
            if user is None:
                raise StreamerError(f"not a standing question: {question!r}")
            user.session.unwatch(question)
        except StreamerError as err:
            raise toast(str(err), "Cannot stop watching") from None
        return listed(user)

    def refresh(request: gr.Request):
        """The chat when alerts came since it was last sent (not while an answer is being written into it: the
        answer's last update carries them), and the alert box when it changed."""
        user = user_of(request, create=False)
        if user is None:
            return gr.skip(), gr.skip()
        chat = box = gr.skip()
        serial = user.alert_serial  # read first: a chat taken after it holds at least these alerts
        if serial != user.alerts_sent and not user.chat_busy:
            user.alerts_sent, chat = serial, user.chat.shown(chat_window)
        alerts = user.session.alerts
        if (serial, len(alerts)) != user.alert_box:
            user.alert_box, box = (serial, len(alerts)), plots.alerts_html(alerts, serial)
        return chat, box

    quiet = dict(show_progress="hidden", show_progress_on=[panel.question])
    panel.add.click(on_watch, [panel.question], [panel.watches, panel.question], api_name="watch", **quiet)
    panel.question.submit(on_watch, [panel.question], [panel.watches, panel.question], api_name=False, **quiet)
    # preprocess=False: the session, not the list this page was last sent, says what is a standing question
    panel.remove.click(on_unwatch, [panel.watches], [panel.watches], api_name="unwatch", preprocess=False, **quiet)
    timer.tick(refresh, None, [chatbot, panel.alerts], api_name="alerts", show_progress="hidden")
