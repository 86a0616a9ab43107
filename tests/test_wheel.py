"""The installable package: build the wheel from this checkout, check what it holds, install it into
an empty folder and load the built-in model from there, away from the checkout.

Built offline with the venv's setuptools (`--no-build-isolation`), installed with `--no-deps` (the
dependencies are the venv's own): nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the checkout, so the build leaves nothing (build/, *.egg-info) in it."""
    src, out = tmp_path_factory.mktemp("src") / "streamer", tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             ".pytest_cache", "results", "runs", "*.mp4"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, cwd=out, capture_output=True, text=True)
    (path,) = out.glob("streamer-*.whl")
    return path


def test_wheel_has_the_weights_and_one_import_root(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"streamer", next(t for t in top if t.endswith(".dist-info"))}, top
    assert "streamer/models/weights/tiny.safetensors" in names
    for module in ("streamer/kv_window.py", "streamer/frames.py", "streamer/models/tiny.py", "streamer/app/ui.py",
                   "streamer/world/demo.py", "streamer/shared_types.py", "streamer/video/decode_pyav.py",
                   "streamer/kv_scorers/knorm.py"):
        assert module in names
    assert not [n for n in names if n.startswith(("streamer/tests/", "streamer/train/", "streamer/bench/"))]


def test_wheel_metadata_declares_dependencies_extras_and_scripts(wheel):
    z = zipfile.ZipFile(wheel)
    info = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(z.read(info).decode())
    requires = meta.get_all("Requires-Dist")
    runtime = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r}
    assert {"torch", "transformers", "gradio", "av", "decord", "opencv-python-headless"} <= runtime
    assert not runtime & {"pytest", "pytest-timeout", "playwright", "gradio_client"}, runtime  # test tools are extras
    assert any(r.startswith("pytest") and 'extra == "test"' in r for r in requires)
    scripts = z.read(info.replace("METADATA", "entry_points.txt")).decode()
    for line in ("streamer = streamer.entry:cli", "streamer-demo = streamer.entry:demo",
                 "streamer-ui = streamer.entry:ui"):
        assert line in scripts


def test_installed_wheel_loads_tiny_from_its_own_files(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    code = ("import streamer.models.tiny as t, streamer.world.demo, streamer.app.ui\n"
            "from streamer.models.registry import load_model\n"
            "a = load_model('tiny')\n"
            "print(t.WEIGHTS_FILE, a.describe()['max_position_embeddings'])")
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy comes before the checkout's editable one
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    weights = Path(run.stdout.split()[0])
    assert weights.is_relative_to(target) and weights.is_file()
    demo = subprocess.run([str(target / "bin" / "streamer-demo"), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert demo.returncode == 0 and "--budget" in demo.stdout, demo.stderr
