"""Files: writes that never leave a half-written file under its final name (docs/ARCHITECTURE.md, "Conventions"),
and image reads that need nothing beyond OpenCV (training machines have no PyAV or MediaPipe).

Standard library at import (numpy and OpenCV load on the first image read), so the command line
can validate timelines and paths before any heavy module loads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Still-image formats rtanim reads and writes (OpenCV codecs).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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


def load_rgb(path: str | Path) -> np.ndarray | None:
    """An image file as HxWx3 RGB uint8, or None if it does not decode.

    np.fromfile + imdecode rather than imread: it also works with non-ASCII paths on Windows.
    """
    import cv2
    import numpy as np

    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image, or one clear InputError (missing, unreadable, not an image)."""
    from rtanim.checks import input_path
    from rtanim.errors import InputError

    path = input_path(path)
    image = load_rgb(path)
    if image is None:
        raise InputError(path, f"not a readable image (supported: {', '.join(IMAGE_EXTENSIONS)})")
    return image
