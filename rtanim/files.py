"""Writing files so that no half-written one ever carries its final name (DESIGN.md, "Conventions")."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds, removed when it fails.

    The temporary name keeps the suffix, so writers that pick a format by it (savefig, np.save,
    OpenCV) still work; it starts with a dot and carries the pid, so parallel writers never collide.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.part{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with staged(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with staged(path) as tmp:
        tmp.write_bytes(data)
