"""streamer.atomic: a target is either absent (or its old self) or complete, and no temporary is left behind."""

from __future__ import annotations

import pytest

from streamer.atomic import atomic_dir, atomic_file


def test_atomic_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "clip.mp4"  # the parent folder is created
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".mp4"  # writers that pick the format by name
        tmp.write_text("first half ")
        assert not target.exists()  # half-written: only the temporary holds it
        with open(tmp, "a") as f:
            f.write("second half")
    assert target.read_text() == "first half second half"
    assert [p.name for p in target.parent.iterdir()] == ["clip.mp4"]

    with atomic_file(target) as tmp:  # the last writer wins
        tmp.write_text("new")
        assert target.read_text() == "first half second half"
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["clip.mp4"]


def test_atomic_file_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "never.json"):
            raise RuntimeError("failed before writing anything")
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_atomic_dir_first_writer_wins_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "cache" / "model"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == target.parent
        (tmp / "config.json").write_text("first")
        assert not target.exists()
        (tmp / "model.safetensors").write_text("weights")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]

    with atomic_dir(target) as tmp:  # another writer finished first: this copy is discarded, no error
        (tmp / "config.json").write_text("second")
    assert (target / "config.json").read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    target = tmp_path / "tokenizer"
    with pytest.raises(OSError):
        with atomic_dir(target) as tmp:
            (tmp / "tokenizer.json").write_text("{")
            raise OSError("cannot write")
    assert list(tmp_path.iterdir()) == []
