"""One stream, many viewers: `StreamSession.fork()` gives each person a chat of their own over one cache.

The stream is ingested once, into the session's cache. A viewer's question runs on a fork of that cache
that is taken back when the answer ends (`StreamSession._aside`: the cache's tensors are shared, not
copied; what the pass appends, evicts or scores is undone), so nothing a viewer asks changes the stream's
cache, the session's own chat or another viewer's. A viewer keeps its turns and feeds its last
`RECALL_TURNS` again (as text, aside) before a new question, so a follow-up ("and what colour is it?")
reads like one in a single chat.

Cost: ingest is paid once for all viewers; a question costs its own tokens plus the recalled turns; memory
is one cache plus what one question appends while it is answered (answers take turns under the session's
lock).
"""

from __future__ import annotations

from collections.abc import Iterator

from streamer.errors import BudgetError
from streamer.shared_types import Turn

RECALL_TURNS = 4  # a viewer's earlier turns fed again before its next question


class Viewer:
    """A person watching a shared `StreamSession`: `ask`/`answer` as on the session, with its own `history`."""

    def __init__(self, stream) -> None:  # a StreamSession (which imports this module)
        self.stream = stream
        self.history: list[Turn] = []

    def ask(self, question: str, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        """`StreamSession.ask` on a fork of the stream's cache: refused the same way, taken back afterwards."""
        return self.stream.ask(question, max_new_tokens, temperature, viewer=self)

    def answer(self, question: str, max_new_tokens: int = 64, temperature: float = 0.0) -> str:
        return "".join(self.ask(question, max_new_tokens, temperature))

    def recall(self) -> None:
        """Feed this viewer's last turns (text: questions, answers, turn ends) into the stream's cache in one
        pass; runs aside, under the stream's lock. Turns that no longer fit the model's positions are left
        out, the oldest first."""
        s = self.stream
        turns = self.history[-RECALL_TURNS:]
        while turns:
            ids, conv = [], s.conv
            for turn in turns:
                question = s.adapter.question_prompt(turn.question, conv)
                end = s.adapter.answer_end(question.after)
                ids += question.input_ids[0].tolist() + turn.ids + end.input_ids[0].tolist()
                conv = end.after
            try:
                s._check_room(len(ids), "a viewer's earlier turns")
            except BudgetError:
                turns = turns[1:]
                continue
            s._forward_ids(ids)
            s.conv = conv
            return
