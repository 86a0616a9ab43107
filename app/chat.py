"""The chat of one web UI session, bounded: what the page is sent stays the same size however long the chat.

- `Chat` keeps the turns as Gradio messages (`{"role", "content"}`, content escaped by `plots.chat_text`) up
  to `UiSettings.max_chat_chars` characters of content (200 000 by default); past that the oldest turns
  are dropped (counted, and said in the whole chat). That is the chat's share of a session's memory.
  A turn is a question and its answer, or a note: one assistant message no question asked for (an alert
  of a standing question, put there by `UserSession._take_alerts`).
- the page is sent only the last `UiSettings.chat_window` turns (20), after a line saying how many earlier
  turns are hidden; an answer's response therefore carries at most that many turns, at question 200 as at
  question 1. The whole kept chat is reachable as text ("Show the whole chat", `text()`).

Threads: answers are added by the page's request, notes by the feed thread; both go through one lock.

Not here: asking (`app/state.py`), the page (`app/ui.py`).
"""

from __future__ import annotations

import html
import threading

from streamer.app.plots import chat_text

NO_WORD = "(the model stopped without a word)"


class Chat(list):
    """Gradio messages of one session, at most `max_chars` characters of content (plus the latest turn)."""

    def __init__(self, max_chars: int = 200_000):
        super().__init__()
        self.max_chars, self.chars, self.dropped = max_chars, 0, 0
        self._sizes: list[int] = []  # messages per kept turn: 2 (question, answer) or 1 (a note)
        self._lock = threading.Lock()

    def add(self, question: str, answer: str) -> None:
        """Append one turn (plain text, escaped here); the oldest turns go while the chat is over `max_chars`."""
        self._append([{"role": "user", "content": chat_text(question)},
                      {"role": "assistant", "content": chat_text(answer) if answer else NO_WORD}])

    def note(self, text: str) -> None:
        """Append an assistant message that no question asked for (plain text, escaped here), as a turn."""
        self._append([{"role": "assistant", "content": chat_text(text)}])

    def _append(self, turn: list[dict]) -> None:
        with self._lock:
            self.extend(turn)
            self._sizes.append(len(turn))
            self.chars += sum(len(m["content"]) for m in turn)
            while self.chars > self.max_chars and len(self._sizes) > 1:
                size = self._sizes.pop(0)
                self.chars -= sum(len(m["content"]) for m in self[:size])
                del self[:size]
                self.dropped += 1

    def shown(self, window: int) -> list[dict]:
        """The messages the page shows: the last `window` turns, after a note on the turns not shown."""
        with self._lock:
            hidden = self.dropped + len(self._sizes) - window
            recent = list(self[len(self) - sum(self._sizes[-window:]):])
        if hidden <= 0:
            return recent
        note = f'({hidden} earlier turn(s) not shown here; "Show the whole chat" shows them)'
        return [{"role": "assistant", "content": note}, *recent]

    def text(self) -> str:
        """The whole kept chat as plain text (Q: / A: lines; a note as it is), for "Show the whole chat"."""
        lines = [f"({self.dropped} earliest turn(s) dropped: a session keeps at most {self.max_chars} characters "
                 "of chat)"] if self.dropped else []
        with self._lock:
            messages, sizes = list(self), list(self._sizes)
        at = 0
        for size in sizes:
            for message in messages[at:at + size]:
                said = html.unescape(message["content"].replace("<br>", "\n"))
                lines.append(said if size == 1 else ("Q: " if message["role"] == "user" else "A: ") + said)
            at += size
        return "\n".join(lines) + "\n"
