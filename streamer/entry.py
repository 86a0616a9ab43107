"""How the programs start and stop: `streamer` (streamer.cli), `streamer-ui` (streamer.app.ui), `streamer-serve`
(streamer.app.serve) and `streamer-demo` (streamer.world.demo) all run through `run_main`.

`run_main("streamer.cli", argv)` takes Ctrl-C before anything heavy is imported, then imports the program's
module, parses its arguments (`build_parser()`), sets up logging (`-v` where the program has it) and calls its
`run(args)`. What a user causes becomes one line on stderr and an exit code, never a traceback:

    0    done
    2    a user error (`StreamerError`: missing file, bad option, bad question) or a disk that is full (stdout
         `> /dev/full` or a file being written): one line, the system's reason
    130  Ctrl-C, at any moment: while the modules import (torch takes seconds), the model loads or a stream is read
    141  stdout was closed (`streamer ... | head -c 5`): a quiet stop, the status a shell reports for SIGPIPE

Messages are shown with control characters escaped (`printable`): a file name or a model's answer can hold
terminal escape sequences. This module imports only the standard library, so it is quick to load.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from streamer.text import printable

EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 130, 141

_ctrl_c = threading.Event()  # set by our SIGINT handler, so a KeyboardInterrupt a C library swallowed still counts


def check_ctrl_c() -> None:
    """Raise the KeyboardInterrupt that a library swallowed: PyAV's I/O callback loses the one raised
    while FFmpeg waits on a stream, which then just ends (or fails) after the network timeout."""
    if _ctrl_c.is_set():
        raise KeyboardInterrupt


def _on_ctrl_c(signum, frame):
    _ctrl_c.set()
    raise KeyboardInterrupt


def run_main(module: str, argv: list[str] | None = None) -> int:
    """Run the program in `module` (it has `build_parser()` and `run(args) -> int`); returns the exit code."""
    from streamer.errors import StreamerError  # light: the standard library only

    ours = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _on_ctrl_c))
    if ours:
        signal.signal(signal.SIGINT, _on_ctrl_c)
    _ctrl_c.clear()
    try:
        program = importlib.import_module(module)  # seconds of imports: Ctrl-C here is handled below
        args = program.build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            code = program.run(args)
            sys.stdout.flush()  # a full stdout fails here, not in the interpreter's last flush
            return code
        except StreamerError:
            check_ctrl_c()  # a source that failed because Ctrl-C was swallowed: the Ctrl-C is the news
            raise
    except StreamerError as err:
        print(f"error: {printable(str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, like a Unix tool
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as err:  # a disk that is full (`> /dev/full`, the --video folder), a file that cannot be written
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        _discard_stdout()  # what could not be written is lost either way; the last flush must not fail again
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {printable(err.strerror or str(err))}{printable(where)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def writing_stdout():
    """Turn a write to stdout that fails (`> /dev/full`: no space left) into an OutputError, one line; a
    closed stdout stays a BrokenPipeError (a quiet stop). Stdout is pointed at /dev/null first, so the
    interpreter's last flush of what is left cannot fail again with a traceback."""
    from streamer.errors import OutputError

    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        _discard_stdout()
        raise OutputError(f"cannot write to stdout ({error.strerror or error}); free some space or "
                          "send the output elsewhere") from None


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush of it cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests capture it)
        pass


def cli() -> None:
    sys.exit(run_main("streamer.cli"))


def ui() -> None:
    sys.exit(run_main("streamer.app.ui"))


def serve() -> None:
    sys.exit(run_main("streamer.app.serve"))


def demo() -> None:
    sys.exit(run_main("streamer.world.demo"))
