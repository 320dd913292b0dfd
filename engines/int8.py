"""INT8 calibration for TensorRT: a calibration set from face crops, and the calibrator that caches.

INT8 activations need ranges measured on realistic inputs, i.e. real face
crops paired with the spread of AU vectors seen at run time (rest, presets and
random mixes), not noise. Calibrating takes minutes on a GPU; TensorRT writes a
calibration cache that later builds read instead, so the cache file is what
gets kept and passed around (``rtanim export --precision int8 --calib FILE``).
TensorRT 10 marks implicit (calibrator) quantisation deprecated but supports it;
it is the only INT8 path that needs no retraining.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES, PRESETS, to_vector
from rtanim.files import write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_SUFFIX = ".cache"


@dataclass
class CalibrationSet:
    """Calibration inputs in the engine's I/O contract: image [N,3,S,S] in [-1,1], aus [N,K]."""

    images: np.ndarray
    aus: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.images.tobytes())
        h.update(self.aus.tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        np.savez_compressed(path, images=self.images, aus=self.aus)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["images"].astype(np.float32), data["aus"].astype(np.float32))


def sample_aus(n: int, au_codes: Sequence[str] = AU_CODES, seed: int = 0) -> np.ndarray:
    """AU vectors like those seen live: a third at rest / presets, a third sparse, a third dense."""
    rng = np.random.default_rng(seed)
    presets = [to_vector(p.aus, au_codes) for p in PRESETS.values()]
    out = np.zeros((n, len(au_codes)), np.float32)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out[i] = presets[rng.integers(len(presets))] * rng.uniform(0.3, 1.0)
        elif kind == 1:
            mask = rng.random(len(au_codes)) < 0.2
            out[i] = mask * rng.uniform(0, 1, len(au_codes))
        else:
            out[i] = rng.uniform(0, 1, len(au_codes))
    return out


def build_calibration_set(
    crop_dir: str | Path, au_codes: Sequence[str] = AU_CODES, *, size: int = 128, limit: int = 512, seed: int = 0
) -> CalibrationSet:
    """Face crops (images in ``crop_dir``, resized to ``size`` if needed) with sampled AU vectors."""
    import cv2

    crop_dir = Path(crop_dir)
    if not crop_dir.is_dir():
        raise InputError(crop_dir, "not a directory of face crops", field="--calib")
    files = sorted(p for p in crop_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise InputError(crop_dir, f"no images ({', '.join(IMAGE_SUFFIXES)}) to calibrate with", field="--calib")
    images = np.empty((len(files), 3, size, size), np.float32)
    for i, f in enumerate(files):
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f, "unreadable image", field="--calib")
        if bgr.shape[:2] != (size, size):
            bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
        images[i] = bgr[:, :, ::-1].transpose(2, 0, 1) / 127.5 - 1.0
    return CalibrationSet(images, sample_aus(len(files), au_codes, seed))


def make_calibrator(data: CalibrationSet | None, cache_path: str | Path, batch_size: int = 8, device: int = 0):
    """A TensorRT entropy calibrator over ``data`` that reads/writes ``cache_path``.

    With ``data=None`` it only replays an existing cache (no GPU work for calibration).
    Needs tensorrt and a CUDA build of torch (device buffers come from torch).
    """
    import tensorrt as trt
    import torch

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind base must be initialised explicitly
            self.cache_path = Path(cache_path)
            self.index = 0
            self.device = torch.device("cuda", device)
            if data is not None:
                self.images = torch.empty((batch_size, *data.images.shape[1:]), device=self.device)
                self.aus = torch.empty((batch_size, data.aus.shape[1]), device=self.device)

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names, p_str=None):
            if data is None or self.index + batch_size > len(data):
                return None  # no more data: calibration ends
            sl = slice(self.index, self.index + batch_size)
            self.images.copy_(torch.from_numpy(data.images[sl]))
            self.aus.copy_(torch.from_numpy(data.aus[sl]))
            torch.cuda.synchronize(self.device)
            self.index += batch_size
            ptrs = {"image": self.images.data_ptr(), "aus": self.aus.data_ptr()}
            return [ptrs[n] for n in names]

        def read_calibration_cache(self):
            return self.cache_path.read_bytes() if self.cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(self.cache_path, bytes(cache))

    if data is None and not Path(cache_path).is_file():
        raise InputError(cache_path, "calibration cache not found", field="--calib")
    if data is not None and len(data) < batch_size:
        raise InputError(None, f"need at least {batch_size} calibration crops, got {len(data)}", field="--calib")
    return _Calibrator()


def calibration_source(calib: str | Path, au_codes: Sequence[str], cache_dir: Path, size: int = 128):
    """Resolve ``--calib``: a ``.cache`` file is replayed; a directory of crops is calibrated into a
    cache file under ``cache_dir`` (named by the crops' digest). Returns (data or None, cache path, digest).
    """
    calib = Path(calib)
    if calib.is_file() and calib.suffix == CACHE_SUFFIX:
        return None, calib, hashlib.sha256(calib.read_bytes()).hexdigest()[:16]
    if calib.is_file() and calib.suffix == ".npz":
        data = CalibrationSet.load(calib)
    else:
        data = build_calibration_set(calib, au_codes, size=size)
    return data, cache_dir / f"int8-{data.digest}{CACHE_SUFFIX}", data.digest
