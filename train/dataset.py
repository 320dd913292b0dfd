"""Training data in memory: crops, AU vectors in the model's code order, crop-space landmarks.

Reads a folder made by ``rtanim prepare``, an original GANimation dataset (``imgs/``,
``aus_openface.pkl``, ``train_ids.csv`` / ``test_ids.csv``; AUs divided by 5 as the original
code does) or a packed ``.safetensors`` shard. Crops are decoded once into one uint8 tensor:
128x128 faces are small (49 KB each), and a tensor indexed by the trainer needs no worker
processes, so batches and their order are exactly reproducible on resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES, SIDES, base_code, resolve
from rtanim.face.align import CROP_SIZE
from train.ganimation_layout import OPENFACE_SCALE, read_ganimation
from train.parts import N_LANDMARKS
from train.prepare import DATASET_FORMAT, iter_crops, read_au_table


def code_matrix(src: Sequence[str], dst: Sequence[str]) -> np.ndarray:
    """[len(dst), len(src)] so that ``M @ v_src`` is :func:`rtanim.expression.aus.resolve` of every dst code.

    resolve is linear once the set of keys is fixed (it picks a code, its bilateral base or the
    mean of its sides), so probing it with one-hot vectors over all of ``src`` gives its matrix;
    the trainer uses it to move batches between the data's, the model's and the AU basis's codes.
    """
    m = np.zeros((len(dst), len(src)), np.float32)
    zeros = {c: 0.0 for c in src}
    for j, c in enumerate(src):
        probe = dict(zeros, **{c: 1.0})
        m[:, j] = [resolve(probe, d) for d in dst]
    return m


def flip_permutation(codes: Sequence[str]) -> np.ndarray:
    """Index permutation swapping left and right codes (AU12L <-> AU12R) for mirrored images."""
    index = {c: i for i, c in enumerate(codes)}
    out = np.arange(len(codes))
    for i, c in enumerate(codes):
        if c[-1:] in SIDES:
            other = base_code(c) + ("R" if c[-1] == "L" else "L")
            out[i] = index.get(other, i)
    return out


@dataclass
class FaceData:
    """One split of a dataset, fully in memory."""

    root: Path
    names: list[str]
    images: torch.Tensor  # uint8 [N, 3, S, S]
    aus: np.ndarray  # float32 [N, C] in [0, 1], columns = ``codes``
    codes: tuple[str, ...]
    landmarks: np.ndarray | None  # float32 [N, L, 2] crop px, or None (original GANimation data)
    fingerprint: str

    def __len__(self) -> int:
        return len(self.names)

    def vectors(self, codes: Sequence[str]) -> np.ndarray:
        """AUs as [N, len(codes)] in ``codes`` order; an InputError if the data cannot supply them."""
        missing = [c for c in codes if c not in self.codes and base_code(c) not in self.codes
                   and not all(base_code(c) + s in self.codes for s in SIDES)]
        if missing:
            raise InputError(self.root, f"the model needs AUs {', '.join(missing)} that this dataset does not "
                                        f"label (it has {len(self.codes)}: {', '.join(self.codes[:4])}...)")
        sided = [c for c in codes if c[-1:] in SIDES and c not in self.codes]
        if sided:
            raise InputError(self.root, f"the model needs one-sided AUs ({', '.join(sided[:3])}...) but this dataset "
                                        "has bilateral AUs only; prepare it with `rtanim prepare`")
        return np.clip(self.aus @ code_matrix(self.codes, codes).T, 0.0, 1.0).astype(np.float32)


def _decode(blobs: Sequence[bytes], root: Path) -> torch.Tensor:
    out = torch.empty((len(blobs), 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8)
    for i, b in enumerate(blobs):
        img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(root, f"crop {i} is not a readable JPEG")
        out[i] = torch.from_numpy(_fit(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).transpose(2, 0, 1).copy())
    return out


def _fit(rgb: np.ndarray) -> np.ndarray:
    """Original GANimation crops may be any size; ours are 128. Resize the others."""
    if rgb.shape[:2] != (CROP_SIZE, CROP_SIZE):
        rgb = cv2.resize(rgb, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    return rgb


def _stack(root: Path, names: Sequence[str]) -> torch.Tensor:
    out = torch.empty((len(names), 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8)
    for i, img in enumerate(iter_crops(root, names)):
        out[i] = torch.from_numpy(_fit(img).transpose(2, 0, 1).copy())
    return out


def dataset_kind(path: Path) -> str:
    if path.is_file() and path.suffix == ".safetensors":
        return "shard"
    if (path / "meta.json").is_file() and (path / "aus.csv").is_file():
        return "prepared"
    if (path / "aus_openface.pkl").is_file() and (path / "imgs").is_dir():
        return "ganimation"
    return "unknown"


def load_dataset(path: str | Path, split: str = "train", limit: int = 0) -> FaceData:
    """One split (``train`` | ``test`` | ``all``) of a prepared folder, an original GANimation folder or a shard."""
    root = Path(path)
    if not root.exists():
        raise InputError(root, "no such dataset (run `rtanim prepare SRC... -o DATASET` first)", field="--data")
    if split not in ("train", "test", "all"):
        raise ValueError(split)
    kind = dataset_kind(root)
    if kind == "shard":
        data = _load_shard(root, split)
    elif kind == "prepared":
        data = _load_prepared(root, split)
    elif kind == "ganimation":
        data = _load_ganimation(root, split)
    else:
        raise InputError(root, "not a dataset: expected meta.json + aus.csv (rtanim prepare), imgs/ + "
                               "aus_openface.pkl (GANimation) or a .safetensors shard", field="--data")
    if limit and len(data) > limit:
        data = FaceData(data.root, data.names[:limit], data.images[:limit], data.aus[:limit], data.codes,
                        None if data.landmarks is None else data.landmarks[:limit], data.fingerprint)
    return data


def _select(test: np.ndarray, split: str) -> np.ndarray:
    if split == "all":
        return np.ones(len(test), bool)
    return test if split == "test" else ~test


def _load_prepared(root: Path, split: str) -> FaceData:
    try:
        meta = json.loads((root / "meta.json").read_text())
    except json.JSONDecodeError as e:
        raise InputError(root / "meta.json", f"not valid JSON ({e.msg})") from None
    if meta.get("format") != DATASET_FORMAT:
        raise InputError(root / "meta.json", "not an rtanim dataset", field="format")
    names, test, aus, codes = read_au_table(root / "aus.csv")
    keep = _select(test, split)
    lm_path = root / "landmarks.npy"
    landmarks = None
    if lm_path.is_file():
        lm = np.load(lm_path, allow_pickle=False, mmap_mode="r")
        if lm.shape[0] != len(names):
            raise InputError(lm_path, f"{lm.shape[0]} rows but aus.csv has {len(names)}")
        landmarks = np.asarray(lm[keep, :, :2], np.float32)
    chosen = [n for n, k in zip(names, keep, strict=True) if k]
    return FaceData(root, chosen, _stack(root, chosen), aus[keep], codes, landmarks, str(meta.get("fingerprint", "")))


def _load_ganimation(root: Path, split: str) -> FaceData:
    layout = read_ganimation(root)
    ids = {"train": layout.train_ids, "test": layout.test_ids, "all": layout.train_ids + layout.test_ids}[split]
    names = [n for n in ids if n in layout.aus and (root / "imgs" / f"{n}.jpg").is_file()]
    aus = np.array([layout.aus[n] for n in names], np.float32).reshape(-1, len(AU_CODES)) / OPENFACE_SCALE
    digest = hashlib.sha256(("\n".join(names)).encode() + np.ascontiguousarray(aus).tobytes()).hexdigest()[:32]
    return FaceData(root, names, _stack(root, names), np.clip(aus, 0, 1), AU_CODES, None, f"ganimation:{digest}")


def _load_shard(path: Path, split: str) -> FaceData:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            info = f.metadata() or {}
            if info.get("format") != "rtanim.shard":
                raise InputError(path, "not an rtanim dataset shard", field="format")
            t = {k: f.get_tensor(k) for k in ("jpeg", "offsets", "aus", "landmarks", "test")}
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"not a readable shard ({e})") from None
    names = json.loads(info["names"])
    codes = tuple(json.loads(info["codes"]))
    meta = json.loads(info.get("meta", "{}"))
    keep = _select(t["test"].astype(bool), split)
    off, jpeg = t["offsets"], t["jpeg"]
    idx = np.flatnonzero(keep)
    blobs = [jpeg[off[i]:off[i + 1]].tobytes() for i in idx]
    return FaceData(path, [names[i] for i in idx], _decode(blobs, path), t["aus"][keep].astype(np.float32), codes,
                    t["landmarks"][keep, :, :2].astype(np.float32), str(meta.get("fingerprint", "")))


def check_landmarks(data: FaceData) -> np.ndarray:
    """The landmarks flow supervision needs, or an InputError naming what is missing."""
    if data.landmarks is None or data.landmarks.shape[1] < N_LANDMARKS - 10:
        raise InputError(data.root, "flow models need landmarks (landmarks.npy, written by `rtanim prepare`); "
                                    "this dataset has none", field="landmarks")
    return data.landmarks


def fit_dataset_basis(data: FaceData):
    """An AU -> landmark basis fitted on this data (``landmarks ~ mean + AUs @ B``), for flow supervision when
    no basis ships; calib/fit_geometry.py makes the better, pose-corrected one from a large face set."""
    from rtanim.face.landmarks import N_LANDMARKS as MESH
    from rtanim.models.geometry import AUBasis, fit_basis, mirror_permutation, select_controls

    lm = check_landmarks(data)[:, :MESH].astype(np.float64)
    mean, basis, _ = fit_basis(lm, data.vectors(AU_CODES).astype(np.float64))
    return AUBasis(AU_CODES, mean, basis, select_controls(mean), mirror_permutation(mean),
                   meta={"fitted_on": data.fingerprint, "images": len(data)})
