"""The original GANimation dataset files (``aus_openface.pkl``, ``train_ids.csv``, ``test_ids.csv``).

prepare writes them beside its own tables so the original tools read our data, and training reads
them so theirs works here; the pickle is loaded with an allow-list, since a pickle can run code.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES
from rtanim.files import write_bytes, write_text

OPENFACE_SCALE = 5.0  # OpenFace _r intensities are 0-5; ours are 0-1 (docs/ARCHITECTURE.md, "Action Units")


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell raw bytes (array buffers)
}


class _AUUnpickler(pickle.Unpickler):
    """Only numpy arrays and dicts: an AU file must never be able to run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an AU file")
        return super().find_class(module, name)


def load_au_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """``aus_openface.pkl`` -> {name: float64[17] on the 0-5 scale}, refusing anything but arrays and dicts."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    try:
        obj = _AUUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise InputError(path, f"refusing to load: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise InputError(path, f"not a readable AU pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a dict of name -> AU array, got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = key.decode("latin1") if isinstance(key, bytes) else key
        arr = np.asarray(value, dtype=np.float64).reshape(-1) if isinstance(value, np.ndarray | list) else None
        if not isinstance(name, str) or arr is None or arr.size != len(AU_CODES):
            raise InputError(path, f"entry {key!r}: expected {len(AU_CODES)} AU values", field=str(key))
        out[name] = arr
    return out


def save_au_pickle(path: str | Path, aus: dict[str, np.ndarray]) -> None:
    """Protocol 2, numpy float64 arrays, as the original code expects (it divides them by 5)."""
    data = {k: np.asarray(v, np.float64).reshape(len(AU_CODES)) for k, v in aus.items()}
    write_bytes(Path(path), pickle.dumps(data, protocol=2))


def read_ids(path: str | Path) -> list[str]:
    """An ids file (``NAME.jpg`` per line; the original reads it with np.loadtxt) -> names without extension."""
    path = Path(path)
    try:
        lines = [ln.strip().split("\t")[0] for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    return [ln[:-4] if ln.lower().endswith(".jpg") else ln for ln in lines]


def write_ids(path: str | Path, names: Sequence[str]) -> None:
    write_text(Path(path), "".join(f"{n}.jpg\n" for n in names))


@dataclass
class GanimationLayout:
    """The original GANimation dataset files: AUs on the 0-5 scale, ids without extension."""

    aus: dict[str, np.ndarray]
    train_ids: list[str]
    test_ids: list[str]


def read_ganimation(root: str | Path) -> GanimationLayout:
    root = Path(root)
    aus = load_au_pickle(root / "aus_openface.pkl")
    train = read_ids(root / "train_ids.csv") if (root / "train_ids.csv").is_file() else sorted(aus)
    test = read_ids(root / "test_ids.csv") if (root / "test_ids.csv").is_file() else []
    return GanimationLayout(aus, train, test)


def write_ganimation(root: str | Path, layout: GanimationLayout) -> None:
    root = Path(root)
    save_au_pickle(root / "aus_openface.pkl", layout.aus)
    write_ids(root / "train_ids.csv", layout.train_ids)
    write_ids(root / "test_ids.csv", layout.test_ids)
