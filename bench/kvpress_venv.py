"""kvpress's own virtual environment, `bench/kvpress_env/.venv`, created on first use by the benchmarks.

kvpress 0.5.x pins `transformers>=4.56,<5.3`, and this project runs transformers 5.23, so kvpress cannot
live in the project's `.venv`. `ensure()` builds a separate venv beside this file: torch==2.13.0 first
(the CPU wheel; any other torch spec would make pip fetch GBs of CUDA packages), then kvpress at the
pinned version with whatever transformers it pins, then `gguf`/`accelerate`-free extras it needs.
The benchmark then runs `bench/kvpress_worker.py` with that venv's python, in a subprocess, and talks
to it through JSON files. Never created by the test suite.

    .venv/bin/python bench/kvpress_venv.py        # create (about 2 minutes) and print the versions
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / "kvpress_env" / ".venv"
PYTHON = VENV / "bin" / "python"
KVPRESS = "kvpress==0.5.5"
TORCH = "torch==2.13.0"


def ensure(python: str = "python3.11") -> Path:
    """Create the venv if it is missing or incomplete; return its python."""
    if PYTHON.is_file() and _imports_kvpress():
        return PYTHON
    VENV.parent.mkdir(parents=True, exist_ok=True)
    if not PYTHON.is_file():
        subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    pip = [str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [TORCH], check=True)
    subprocess.run(pip + [KVPRESS, TORCH, "safetensors", "sentencepiece"], check=True)
    if not _imports_kvpress():
        raise RuntimeError(f"kvpress does not import in {VENV}")
    return PYTHON


def _imports_kvpress() -> bool:
    return subprocess.run([str(PYTHON), "-c", "import kvpress"], capture_output=True).returncode == 0


def versions() -> dict:
    """Versions of kvpress, transformers and torch inside the venv."""
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('kvpress', 'transformers', 'torch')}))")
    out = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    ensure(sys.argv[1] if len(sys.argv) > 1 else "python3.11")
    print(json.dumps(versions()))
