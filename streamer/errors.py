"""User-facing errors of the streamer package.

Every failure a user can cause (bad file, bad option, a question that does not fit the budget, a model
that cannot be loaded) is raised as a `StreamerError` subclass with a one-line message that says what
to do. The CLI turns it into one line on stderr and exit code 2; the UI shows it as a message.
Programming errors stay ordinary exceptions: they are bugs, not user mistakes. `first_line` shortens a
library's error to the one line such a message quotes.
"""

import math
import numbers
import re


def first_line(error: BaseException) -> str:
    """The first line of an error's text (its type's name if it has none), without decord's
    "[time] file.cc:line: Error:" prefix."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: (Error: )?", "", line)


class StreamerError(Exception):
    """Base class: a user-facing failure with a one-line, actionable message."""


class ConfigError(StreamerError, ValueError):
    """An option has a value we cannot work with (budget, fps, policy, ...)."""


class SourceError(StreamerError):
    """A video source cannot be opened or read."""


class SourceNotFoundError(SourceError):
    """The file does not exist (or the URL cannot be reached)."""


class NotAVideoError(SourceError):
    """The file exists but holds no video stream (random bytes, audio only, ...)."""


class NotOneFileError(NotAVideoError):
    """A file that must be read as the one media file it is (an upload) would make FFmpeg read other files
    or the network: a playlist, a list of files, an image sequence, or not a file at all."""


class UnsupportedCodecError(SourceError):
    """The container has a video stream that no available backend can decode."""


class NoFramesError(SourceError):
    """The source opened but no frame could be decoded from it."""


class WebcamError(SourceError):
    """No webcam at that index/device, or it cannot be opened."""


class BusyError(StreamerError):
    """The session cannot do this now: this thread is still reading one of its answers."""


class OutputError(StreamerError):
    """The answers cannot be written: stdout refuses them (a full disk, a quota), other than by closing."""


class ModelLoadError(StreamerError):
    """A model name or path cannot be loaded (unknown name, no network for a hub id, bad directory)."""


class BudgetError(StreamerError):
    """The input does not fit the KV budget (e.g. a question longer than the budget allows)."""


class QuestionError(StreamerError, ValueError):
    """A question that is not usable text: empty, not valid UTF-8, or holding control characters."""


def check_number(name: str, value, low: float | None = None, high: float | None = None, *, integer: bool = False,
                 low_open: bool = False, high_open: bool = False, none_ok: bool = False):
    """`value` if it is a finite real number (an `int` when `integer`) in the range, else ConfigError naming
    `name` and the range. bool is not a number here; numpy scalars are. `none_ok`: None passes too."""
    if value is None and none_ok:
        return value
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return value
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    rng = " and ".join(p for p in (lo, hi) if p)
    want = f"{'an integer' if integer else 'a finite number'}{' ' + rng if rng else ''}{' or None' if none_ok else ''}"
    raise ConfigError(f"{name} must be {want}, got {value!r}")
