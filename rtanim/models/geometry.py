"""AU -> landmark motion and the dense flow it implies: the ``warp`` model and flow supervision.

A linear basis in canonical crop coordinates, ``landmarks ~ mean + sum_k au_k * B_k``, fitted by
ridge least squares on tracked faces (calib/fit_geometry.py, calib/GEOMETRY.md), turns a change
of AUs into landmark motion ``B^T (target - live)``. A thin-plate spline through a fixed subset
of landmarks (plus zero-motion anchors on the crop border) spreads that motion into a smooth
backward flow over the crop, in the generator's flow convention (rtanim/compose.py), so

- the ``warp`` model (no network: A = 1, C unused, F = this flow) moves real pixels, is the
  baseline every trained model must beat, and runs in a few ms per face on a CPU;
- training can supervise flow heads with :func:`flow_targets`.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtanim.expression.aus import AU_CODES, base_code, to_vector
from rtanim.face.align import CROP_SIZE
from rtanim.face.compose import FaceOutput, compose
from rtanim.face.landmarks import KEY_LANDMARKS, N_LANDMARKS

BASIS_ASSET = "au_basis.npz"



# ----------------------------------------------------------------------------- basis


@dataclass(frozen=True, eq=False)
class AUBasis:
    """``landmarks_crop ~ mean + sum_k au_k * basis[k]`` (crop pixels at ``size``).

    ``codes`` name the AUs the basis was fitted with (GANimation's 17, or the extended sided
    vector); ``controls`` are the landmark indices the dense flow interpolates; ``mirror`` is the
    left/right landmark permutation (for flips in training); ``meta`` records the fit.
    """

    codes: tuple[str, ...]
    mean: np.ndarray  # N x 2
    basis: np.ndarray  # K x N x 2
    controls: np.ndarray  # int indices into the landmarks
    mirror: np.ndarray  # N ints: landmark i mirrors to mirror[i]
    size: int = CROP_SIZE
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> AUBasis:
        """The basis shipped in rtanim/assets (or one at ``path``)."""
        src = resources.files("rtanim") / "assets" / BASIS_ASSET if path is None else Path(path)
        with src.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            return cls(
                codes=tuple(str(c) for c in z["codes"]),
                mean=z["mean"].astype(np.float64),
                basis=z["basis"].astype(np.float64),
                controls=z["controls"].astype(np.int64),
                mirror=z["mirror"].astype(np.int64),
                size=int(z["size"]),
                meta=json.loads(str(z["meta"])),
            )

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            codes=np.array(self.codes),
            mean=self.mean.astype(np.float32),
            basis=self.basis.astype(np.float32),
            controls=self.controls.astype(np.int16),
            mirror=self.mirror.astype(np.int16),
            size=np.array(self.size),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )

    def vector(self, aus: Mapping[str, float] | np.ndarray) -> np.ndarray:
        """AUs (or AU deltas) as this basis's vector (..., K).

        A mapping resolves sided/bilateral codes (rtanim.expression.aus.resolve); an array is either in the
        basis's code order or GANimation's 17 AUs, which then drive both sides.
        """
        if isinstance(aus, Mapping):
            return to_vector(aus, self.codes).astype(np.float64)
        v = np.asarray(aus, np.float64)
        if v.shape[-1] == len(AU_CODES) != len(self.codes):  # GANimation's 17 AUs: each drives both sides
            return v[..., [AU_CODES.index(base_code(c)) for c in self.codes]]
        if v.shape[-1] != len(self.codes):
            raise ValueError(f"AU vector has {v.shape[-1]} values, the basis expects {len(self.codes)}")
        return v

    def displacement(self, delta: np.ndarray) -> np.ndarray:
        """Landmark motion (..., N, 2) in crop pixels for an AU change ``delta`` (..., K)."""
        d = np.asarray(delta, np.float64)
        return np.einsum("...k,knc->...nc", d, self.basis)  # einsum: no OpenBLAS threads (see _kernel32)


def fit_basis(
    landmarks: np.ndarray,
    aus: np.ndarray,
    nuisance: np.ndarray | None = None,
    ridge: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge least squares ``landmarks ~ mean + aus @ B + nuisance @ P``.

    ``landmarks`` M x N x 2 crop pixels, ``aus`` M x K, ``nuisance`` M x Q (head pose terms:
    fitted alongside so pose does not leak into the AU directions, then dropped). The intercept
    is not penalised. Returns (mean N x 2, B K x N x 2, residual M x N x 2).
    """
    m, n, _ = landmarks.shape
    y = landmarks.reshape(m, n * 2)
    x = aus if nuisance is None else np.hstack([aus, nuisance])
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    coef = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ yc)
    intercept = y_mean - x_mean @ coef
    residual = (yc - xc @ coef).reshape(m, n, 2)
    k = aus.shape[1]
    return intercept.reshape(n, 2), coef[:k].reshape(k, n, 2), residual


def select_controls(mean: np.ndarray, count: int = 100, keep: Sequence[int] = KEY_LANDMARKS) -> np.ndarray:
    """``keep`` plus farthest-point samples of the mesh up to ``count`` landmarks.

    Farthest-point sampling spreads the rest evenly, so the spline has support everywhere on
    the face without two controls nearly coinciding (which would make it ill-conditioned).
    """
    pts = mean[:N_LANDMARKS]
    chosen = list(dict.fromkeys(keep))
    dist = np.min(np.linalg.norm(pts[:, None] - pts[chosen][None], axis=-1), axis=1)
    while len(chosen) < count:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[i], axis=-1))
    return np.array(chosen, dtype=np.int64)


#: Iris points (after the 468 mesh points): centre, then four around it; mirroring swaps the
#: eyes and, within an iris, the two horizontal points.
IRIS_MIRROR = {468: 473, 469: 476, 470: 475, 471: 474, 472: 477}


def _proto_fields(buf: bytes):
    """Minimal protobuf wire-format reader: (field, wire type, value) triples."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif wt == 5:
            v, i = buf[i : i + 4], i + 4
        elif wt == 1:
            v, i = buf[i : i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield f, wt, v


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        c = buf[i]
        i += 1
        out |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return out, i


def canonical_mesh(bundle: str | Path | None = None) -> np.ndarray:
    """MediaPipe's canonical face mesh (468 x 3, cm, exactly left/right symmetric about x = 0).

    Read from the geometry metadata inside the Face Landmarker bundle (GeometryPipelineMetadata.
    canonical_mesh.vertex_buffer: x, y, z, u, v per vertex) without importing mediapipe.
    """
    src = resources.files("rtanim") / "assets" / "face_landmarker.task" if bundle is None else Path(bundle)
    with src.open("rb") as fh, zipfile.ZipFile(fh) as z:
        meta = z.read("geometry_pipeline_metadata_landmarks.binarypb")
    for _, wt, v in _proto_fields(meta):
        if wt == 2 and len(v) > 5000:  # the Mesh3d message, by far the largest field
            floats = [struct.unpack("<f", x)[0] for f, w, x in _proto_fields(v) if f == 3 and w == 5]
            if len(floats) == N_LANDMARKS * 5:
                return np.array(floats, np.float64).reshape(N_LANDMARKS, 5)[:, :3]
    raise ValueError("no canonical mesh in the Face Landmarker bundle")


def mirror_permutation(landmarks: np.ndarray | int = 478, bundle: str | Path | None = None) -> np.ndarray:
    """Left/right landmark pairs: landmark i of a face is landmark ``perm[i]`` of its mirror image.

    From the symmetric canonical mesh, not from tracked faces: their ~1 px asymmetry is enough to
    confuse neighbouring mesh points (the mouth corner 61 would pair with 306 instead of 291).
    ``landmarks`` (a count, 468 or 478, or an array of that many points) only sets the length.
    """
    n = landmarks if isinstance(landmarks, int) else len(landmarks)
    if n not in (N_LANDMARKS, N_LANDMARKS + 10):
        raise ValueError(f"mirror pairs exist for 468 or 478 landmarks, not {n}")
    mesh = canonical_mesh(bundle)
    flipped = mesh * np.array([-1.0, 1.0, 1.0])
    perm = np.argmin(np.linalg.norm(flipped[:, None] - mesh[None], axis=-1), axis=1)
    full = np.concatenate([perm, np.arange(N_LANDMARKS, N_LANDMARKS + 10)])
    for a, b in IRIS_MIRROR.items():
        full[a], full[b] = b, a
    if not np.array_equal(full[full], np.arange(len(full))):
        raise ValueError("canonical mesh is not left/right symmetric")
    return full[:n]


# ----------------------------------------------------------------------------- dense flow


def border_anchors(size: int = CROP_SIZE, per_side: int = 8) -> np.ndarray:
    """Zero-motion points around the crop border, so the flow dies out before the feathered edge."""
    lo, hi = -0.5, size - 0.5
    t = np.linspace(lo, hi, per_side + 1)[:-1]  # each side from one corner, up to the next
    return np.concatenate(
        [
            np.stack([t, np.full_like(t, lo)], 1),
            np.stack([np.full_like(t, hi), t], 1),
            np.stack([lo + hi - t, np.full_like(t, hi)], 1),
            np.stack([np.full_like(t, lo), lo + hi - t], 1),
        ]
    )


def _kernel32(q: np.ndarray, c: np.ndarray, q2: np.ndarray | None = None) -> np.ndarray:
    """TPS kernel r^2 log r^2 between normalised float32 points (len(q) x len(c)).

    OpenCV's gemm and log rather than numpy's: numpy's multi-threaded OpenBLAS spin-waits when
    the cores are busy (as in the pipeline) and then takes ~15 ms for these small products,
    against < 1 ms here; r^2 from one product has ~1e-7 cancellation error, far below a pixel.
    ``q2`` is ``|q|^2`` (len(q) x 1) when precomputed.
    """
    r2 = cv2.gemm(q, c, -2.0, None, 0.0, flags=cv2.GEMM_2_T)
    r2 += (q * q).sum(1)[:, None] if q2 is None else q2
    r2 += (c * c).sum(1)[None]
    np.maximum(r2, 1e-30, out=r2)
    return cv2.multiply(cv2.log(r2), r2)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 a @ b without numpy's OpenBLAS threads (see _kernel32)."""
    return cv2.gemm(np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32), 1.0, None, 0.0)


class ThinPlate:
    """Thin-plate spline interpolation of 2D motion from scattered points onto the crop grid.

    The spline is solved per face (its controls move with the face) with fixed zero-motion
    anchors on the crop border, and evaluated on a ``grid`` x ``grid`` lattice, then upsampled
    bicubically to the crop: the field is smooth, so at 64 that stays within ~0.5 px of the exact
    spline at the landmarks (32: ~1.3 px, 2.5x faster) at a quarter of the cost of every pixel.
    The lattice and its kernel against the anchors are precomputed. ``smoothing`` (regulariser on
    the kernel diagonal, normalised units) keeps nearby controls with different motion stable.
    """

    def __init__(self, size: int = CROP_SIZE, grid: int = 64, smoothing: float = 1e-5, anchors_per_side: int = 8):
        self.size, self.grid, self.smoothing = size, grid, smoothing
        self.anchors = border_anchors(size, anchors_per_side)
        centres = (np.arange(grid) + 0.5) * size / grid - 0.5  # cv2.resize's sample positions
        gx, gy = np.meshgrid(centres, centres)
        self.grid_pts = np.stack([gx.ravel(), gy.ravel()], 1)
        self._grid_n = self._norm(self.grid_pts).astype(np.float32)
        self._grid_n2 = (self._grid_n * self._grid_n).sum(1)[:, None]
        self._anchors_n = self._norm(self.anchors)
        # Design matrix [kernel to moving controls | kernel to anchors | 1 x y] on the lattice: all but
        # the first block are fixed, so one gemm per face evaluates the whole spline.
        self._fixed = np.hstack(
            [
                _kernel32(self._grid_n, self._anchors_n.astype(np.float32)),
                np.ones((len(self._grid_n), 1), np.float32),
                self._grid_n,
            ]
        )
        self._design: np.ndarray | None = None

    def _norm(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, np.float64)[:, :2] + 0.5) / self.size

    def solve(self, points: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Spline (normalised centres, weights + affine part) for ``values`` (P x 2) at ``points``."""
        c = np.concatenate([self._norm(points), self._anchors_n])
        n = len(c)
        r2 = ((c[:, None] - c[None]) ** 2).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(r2 > 0, r2 * np.log(r2), 0.0)
        k[np.diag_indices(n)] += self.smoothing
        p = np.hstack([np.ones((n, 1)), c])
        a = np.zeros((n + 3, n + 3))
        a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
        rhs = np.zeros((n + 3, 2))
        rhs[: len(values)] = values
        ok, sol = cv2.solve(a, rhs, flags=cv2.DECOMP_LU)  # not np.linalg: see _kernel32
        if not ok:
            raise np.linalg.LinAlgError("thin-plate system is singular (coincident controls?)")
        return c, sol

    def evaluate(self, spline: tuple[np.ndarray, np.ndarray], pts: np.ndarray) -> np.ndarray:
        """The spline at ``pts`` (crop pixels), P x 2."""
        c, sol = spline
        q = self._norm(pts).astype(np.float32)
        n = len(c)
        return _matmul(_kernel32(q, c.astype(np.float32)), sol[:n]) + (sol[n] + q @ sol[n + 1 :])

    def field(self, points: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The interpolated field on every crop pixel: size x size x 2 (float32)."""
        c, sol = self.solve(points, values)
        n_moving = len(points)
        if self._design is None or self._design.shape[1] != n_moving + self._fixed.shape[1]:
            self._design = np.hstack([np.zeros((len(self._grid_n), n_moving), np.float32), self._fixed])
        self._design[:, :n_moving] = _kernel32(self._grid_n, c[:n_moving].astype(np.float32), self._grid_n2)
        coarse = _matmul(self._design, sol).reshape(self.grid, self.grid, 2)
        if self.grid == self.size:
            return coarse
        return cv2.resize(coarse, (self.size, self.size), interpolation=cv2.INTER_CUBIC)


# ----------------------------------------------------------------------------- the warp model


@dataclass(frozen=True)
class WarpFace:
    """What the warp model needs per face (neural engines need only the crop and target AUs)."""

    landmarks: np.ndarray  # N x 2 (or N x 3) in crop pixels
    live_aus: Mapping[str, float] | np.ndarray
    target_aus: Mapping[str, float] | np.ndarray


@dataclass(frozen=True)
class WarpOutputs:
    """Batched outputs in the engines' contract: attention [N,1,S,S], color [N,3,S,S], flow [N,2,S,S]."""

    attention: np.ndarray
    color: np.ndarray
    flow: np.ndarray


@dataclass(frozen=True)
class FlowTargets:
    """Flow supervision at landmarks, in grid_sample units (normalised crop coordinates).

    ``points``: where the target landmarks are (..., P, 2), for sampling a predicted flow with
    ``grid_sample``; ``flow``: the backward flow it should have there (..., P, 2), i.e.
    ``source - target`` divided by the crop half-size; ``target`` in crop pixels.
    """

    target: np.ndarray
    points: np.ndarray
    flow: np.ndarray


class WarpModel:
    """The ``warp`` model: landmark motion from the AU basis, spread by a thin-plate spline.

    ``strength`` scales the motion (the least-squares basis is an average face's motion; >1
    exaggerates). Call :meth:`flow` per face, :meth:`run_faces` for engine-style batched
    outputs, or :func:`apply_warp` for a whole frame.
    """

    name = "warp"

    def __init__(self, basis: AUBasis | None = None, strength: float = 1.0, grid: int = 64) -> None:
        self.basis = AUBasis.load() if basis is None else basis
        self.strength = strength
        self.size = self.basis.size
        self.spline = ThinPlate(self.size, grid=grid)
        self._basis_ctrl = self.basis.basis[:, self.basis.controls]  # K x P x 2

    @property
    def codes(self) -> tuple[str, ...]:
        return self.basis.codes

    def delta(self, live_aus: Mapping[str, float] | np.ndarray, target_aus: Mapping[str, float] | np.ndarray):
        return self.basis.vector(target_aus) - self.basis.vector(live_aus)

    def landmark_motion(self, live_aus, target_aus) -> np.ndarray:
        """All landmarks' motion (N x 2 crop px) for going from the live AUs to the targets."""
        return self.strength * self.basis.displacement(self.delta(live_aus, target_aus))

    def flow(self, landmarks: np.ndarray, live_aus, target_aus) -> np.ndarray:
        """Backward flow [2,S,S] (normalised, grid_sample convention) for one face.

        Each control landmark moves from ``s`` to ``t = s + d``; the output pixel at ``t`` must
        sample the input at ``s``, so the spline interpolates ``-d`` at the targets.
        """
        d = self.strength * np.einsum("k,kpc->pc", self.delta(live_aus, target_aus), self._basis_ctrl)
        if not np.any(d):
            return np.zeros((2, self.size, self.size), np.float32)
        src = np.asarray(landmarks, np.float64)[self.basis.controls, :2]
        field_px = self.spline.field(src + d, -d)
        return (field_px * (2.0 / self.size)).transpose(2, 0, 1)

    def run_faces(self, faces: Sequence[WarpFace]) -> WarpOutputs:
        """Engine-style batched outputs: A = 1 (keep the warped input), C = 0 (unused), F = flow."""
        n, s = len(faces), self.size
        flow = np.zeros((n, 2, s, s), np.float32)
        for i, f in enumerate(faces):
            flow[i] = self.flow(f.landmarks, f.live_aus, f.target_aus)
        return WarpOutputs(np.ones((n, 1, s, s), np.float32), np.zeros((n, 3, s, s), np.float32), flow)

    def face_output(self, face: WarpFace) -> FaceOutput:
        s = self.size
        return FaceOutput(
            np.ones((1, s, s), np.float32),
            np.zeros((3, s, s), np.float32),
            self.flow(face.landmarks, face.live_aus, face.target_aus),
        )


_DEFAULT_MODEL: WarpModel | None = None


def default_model() -> WarpModel:
    """The shipped warp model, loaded once."""
    global _DEFAULT_MODEL
    if _DEFAULT_MODEL is None:
        _DEFAULT_MODEL = WarpModel()
    return _DEFAULT_MODEL


def warp_face(face: Any, target_aus: Mapping[str, float] | np.ndarray) -> WarpFace:
    """A tracked face (rtanim.face.tracking.Face) as warp-model input: landmarks in crop pixels."""
    return WarpFace(face.transform.to_crop(face.landmarks), face.aus, target_aus)


def apply_warp(
    frame: np.ndarray,
    faces: Sequence[Any],
    target_aus: Mapping[str, float] | np.ndarray | Sequence[Mapping[str, float] | np.ndarray],
    model: WarpModel | None = None,
) -> np.ndarray:
    """Re-express every tracked face in ``frame`` with the warp model; returns a new frame.

    ``target_aus``: one AU mapping/vector for all faces, or one per face (same order as ``faces``).
    """
    model = default_model() if model is None else model
    if isinstance(target_aus, Mapping) or (isinstance(target_aus, np.ndarray) and target_aus.ndim == 1):
        targets = [target_aus] * len(faces)
    else:
        targets = list(target_aus)
        if len(targets) != len(faces):
            raise ValueError(f"{len(faces)} faces but {len(targets)} target AU sets")
    outputs = [model.face_output(warp_face(f, t)) for f, t in zip(faces, targets, strict=True)]
    return compose(frame, outputs, [f.transform for f in faces])


# ----------------------------------------------------------------------------- supervision


def flow_targets(
    landmarks: np.ndarray, au_delta: np.ndarray, basis: AUBasis | None = None, indices: np.ndarray | None = None
) -> FlowTargets:
    """Where landmarks should go for an AU change and the backward flow a flow head should output there.

    ``landmarks`` (..., N, 2) source crop pixels, ``au_delta`` (..., K) target - source AUs in the
    basis's code order or GANimation's 17. ``indices`` picks landmarks (default: the basis's
    control set). numpy; for torch training, precompute ``basis.basis`` as a tensor likewise.
    """
    basis = AUBasis.load() if basis is None else basis
    idx = basis.controls if indices is None else np.asarray(indices)
    src = np.asarray(landmarks, np.float64)[..., idx, :2]
    d = np.einsum("...k,kpc->...pc", basis.vector(np.asarray(au_delta, np.float64)), basis.basis[:, idx])
    target = src + d
    half = basis.size / 2.0
    return FlowTargets(target=target, points=(2.0 * target + 1.0) / basis.size - 1.0, flow=-d / half)


__all__ = [
    "AUBasis",
    "FlowTargets",
    "ThinPlate",
    "WarpFace",
    "WarpModel",
    "WarpOutputs",
    "apply_warp",
    "canonical_mesh",
    "default_model",
    "fit_basis",
    "flow_targets",
    "mirror_permutation",
    "select_controls",
    "warp_face",
]
