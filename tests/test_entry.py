"""The programs' one way to start and stop (`streamer.entry.run_main`, issue 42 classes 3 and 9): Ctrl-C
while the modules import, a full disk on stdout or on a file, a closed stdout, an error naming a file with
escape sequences in its name: one line and an exit code, never a traceback.

Ctrl-C is sent while the program is provably importing: `-X importtime` reports each module as it finishes,
and the signal goes out after the first torch submodule is reported and before the import of the program
ends (torch alone takes seconds). Before run_main the CLI printed a KeyboardInterrupt traceback there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import cli_process

pytestmark = pytest.mark.timeout(120)

PROGRAMS = ["streamer.cli", "streamer.world.demo", "streamer.app.ui"]


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("import time:")]


@pytest.mark.parametrize("module", PROGRAMS)
def test_ctrl_c_while_the_modules_import_is_one_line_and_130(module):
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", module, "--help"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "torch." in line:  # torch is being imported: the program's own imports are under way
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    code = proc.wait(timeout=60)
    messages = _messages("".join(seen) + rest)
    assert code == 130 and messages == ["interrupted"], (code, messages[-5:])


def test_the_cli_checks_its_arguments_before_the_heavy_imports(tmp_path):
    """`--help`, a bad option and a missing file are answered before transformers (seconds) is imported."""
    probe = textwrap.dedent('''
        import sys
        from streamer import cli
        try:
            cli.run(cli.build_parser().parse_args([sys.argv[1], "--budget", "512"]))
        except Exception as err:
            print(type(err).__name__, "transformers" in sys.modules)
    ''')
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "missing.mp4")], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["SourceNotFoundError", "False"], out.stderr


@pytest.fixture
def program(tmp_path, monkeypatch):
    """A throwaway program module for run_main: it prints a line, then does what $DO says."""
    (tmp_path / "toyprog.py").write_text(textwrap.dedent('''
        import argparse, os

        def build_parser():
            p = argparse.ArgumentParser(prog="toy")
            p.add_argument("-v", "--verbose", action="store_true")
            return p

        def run(args):
            print("an answer")
            do = os.environ["DO"]
            if do == "user-error":
                from streamer.errors import SourceError
                raise SourceError("cannot open /videos/\\x1b[2Jclip.mp4")
            if do == "write-file":
                with open("/dev/full", "w") as f:
                    f.write("x" * 100000)
            if do == "ctrl-c":
                raise KeyboardInterrupt
            return 0
    '''))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def run(do: str, stdout=subprocess.PIPE):
        done = subprocess.run([sys.executable, "-c", "import sys; from streamer.entry import run_main; "
                               "sys.exit(run_main('toyprog'))"], env={**env, "DO": do}, stdout=stdout,
                              stderr=subprocess.PIPE, text=True, timeout=60)
        return done.returncode, _messages(done.stderr), done.stdout

    return run


def test_a_full_disk_on_stdout_is_one_line_for_every_program(program):
    with open("/dev/full", "w") as full:
        code, messages, _ = program("done", stdout=full)
    assert code == 2 and messages == ["error: No space left on device"], messages


def test_a_full_disk_on_a_file_is_one_line(program):
    code, messages, out = program("write-file")
    assert (code, messages, out) == (2, ["error: No space left on device"], "an answer\n"), messages


def test_a_user_error_is_one_escaped_line(program):
    code, messages, out = program("user-error")
    assert (code, messages) == (2, ["error: cannot open /videos/\\x1b[2Jclip.mp4"]), messages
    assert out == "an answer\n"


def test_ctrl_c_in_a_program_is_130(program):
    assert program("ctrl-c")[:2] == (130, ["interrupted"])


def test_a_closed_stdout_stops_quietly(program):
    read, write = os.pipe()
    os.close(read)  # nobody will ever read what the program prints
    with os.fdopen(write, "w") as closed:
        code, messages, _ = program("done", stdout=closed)
    assert (code, messages) == (141, []), messages


def test_closed_stdout_stops_quietly_with_141(video):
    proc = cli_process(video, "--model", "tiny-random", "--max-new-tokens", "2", stdin=subprocess.PIPE)
    try:
        assert proc.stdout.read(5) == b"you> "  # ingested; the prompt waits for a question
        proc.stdout.close()  # like `| head -c 5`
        proc.stdin.write(b"what now?\n")
        proc.stdin.close()
        proc.wait(timeout=120)
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert proc.returncode == 141 and "Traceback" not in err and "Error" not in err, err
