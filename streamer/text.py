"""Text from and to people: a question is checked before any work (`check_question`), and text shown on a
terminal has its control characters escaped (`printable`). One set of control characters serves both.

Light on purpose (the standard library only): the programs' entry (`streamer.entry`) uses it before the heavy
imports run.
"""

from __future__ import annotations

import re

from streamer.errors import QuestionError

# C0 controls but tab, newline and carriage return; DEL and C1; lone surrogates (undecodable bytes reach `str`
# as U+DC80-U+DCFF, the way Python decodes argv and a surrogateescape stdin)
_CONTROL = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff"
_NOT_TEXT = re.compile(f"[{_CONTROL}]")
# shown escaped on a terminal: those, a carriage return (it overwrites the line) and the bidirectional overrides
_UNSAFE = re.compile(f"[{_CONTROL}\r\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control characters shown escaped (`\\x1b`, `\\r`) instead of acted on by a terminal;
    newlines and tabs stay."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


MAX_QUESTION_CHARS = 100_000  # longer text is refused before it is tokenized; no budget would hold it


def check_question(question: str | bytes) -> str:
    """The question with surrounding whitespace stripped, or `QuestionError` saying why it is not one.

    Bad text is refused, not cleaned, so the user sees what was wrong and the model never answers a
    silently changed question. Refused: anything but `str` or UTF-8 `bytes`; text that is not valid
    UTF-8 (undecodable bytes reach `str` as lone surrogates U+DC80-U+DCFF, the way Python decodes argv
    and a surrogateescape stdin); control characters other than tab, newline and carriage return (NUL,
    ESC and the rest of C0, DEL, C1); blank text; more than `MAX_QUESTION_CHARS` characters.
    Chat-template tokens typed as text ("<image>", "<|im_end|>") are fine: the adapters tokenize user
    text literally (`streamer.models.prompt`).
    """
    if isinstance(question, bytes | bytearray):
        try:
            question = bytes(question).decode("utf-8")
        except UnicodeDecodeError as err:
            raise QuestionError(_not_utf8(question[err.start], err.start)) from None
    if not isinstance(question, str):
        raise QuestionError(f"a question must be text (str), got {type(question).__name__}")
    if len(question) > MAX_QUESTION_CHARS:
        raise QuestionError(f"the question has {len(question)} characters; at most {MAX_QUESTION_CHARS} are accepted")
    bad = _NOT_TEXT.search(question)
    if bad:
        code, at = ord(bad.group()), bad.start()
        if 0xDC80 <= code <= 0xDCFF:
            raise QuestionError(_not_utf8(code - 0xDC00, at))
        if 0xD800 <= code <= 0xDFFF:
            raise QuestionError(f"the question is not valid text (lone surrogate U+{code:04X} at character {at})")
        raise QuestionError(f"the question holds a control character (U+{code:04X} at character {at}); type plain text")
    question = question.strip()
    if not question:
        raise QuestionError("the question is empty; type a question")
    return question


def _not_utf8(byte: int, at: int) -> str:
    return (f"the question is not valid UTF-8 (byte 0x{byte:02x} at character {at}); "
            "set the terminal or file encoding to UTF-8")
