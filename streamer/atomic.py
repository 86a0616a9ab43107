"""Atomic writes: a file or a directory is written under a temporary name beside its target, then renamed.

Readers (and other processes racing to write the same thing) never see a half-written target, and a
failure leaves no temporary file or directory behind.

- `atomic_file(path)`: yields a temporary path (same folder, same suffix, so writers that pick the
  format from the name still work); on success it replaces `path` (the last writer wins).
- `atomic_dir(path)`: yields a new empty temporary directory; on success it is renamed to `path`, unless
  another writer got there first (the first writer wins: this copy is discarded, no error).

Deliberately not here: what is written, where caches live, and what a caller does when writing fails
(the `OSError` propagates; a cache may log it and go on, a save may turn it into a user-facing error).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def _beside(path: Path) -> Path:
    """A fresh hidden name in the folder of `path`, keeping its suffix: dir/.name.<random>.tmp.mp4."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Write a file at the yielded temporary path; it becomes `path` (replacing any old one) when the block
    ends without an exception. The parent folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Fill the yielded empty temporary directory; it becomes `path` when the block ends without an
    exception. If `path` already exists by then (another writer finished first), the copy is discarded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
            log.debug("%s was written by another writer first; this copy is discarded", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
