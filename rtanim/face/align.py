"""Canonical face crop: a similarity transform from frame pixels to a 128x128 crop, and back.

The generator sees every face in one pose-normalised frame (docs/ARCHITECTURE.md, "Crop"), and
compose.py pastes its outputs back with the exact inverse, so both directions live
here, in numpy/cv2 for single frames and in torch for batches already on a device.

Pixel convention everywhere: pixel (i, j) has its centre at x=j, y=i (OpenCV's), so a
crop spans [-0.5, 127.5] and its centre is 63.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

CROP_SIZE = 128

#: MediaPipe Face Mesh indices that anchor the fit: eye corners (33, 133 | 362, 263),
#: the nose ridge and tip (168, 6, 4, 1), nose wings (98, 327) and mouth corners (61, 291).
#: Brows, lips and chin are left out because they move with the AUs we edit; the mouth
#: corners (which move with AU12/AU20) only count half, to pin the lower face's scale.
TEMPLATE_INDICES: tuple[int, ...] = (33, 133, 362, 263, 168, 6, 4, 1, 98, 327, 61, 291)
TEMPLATE_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0.5], dtype=np.float64)

#: Where those landmarks sit in the 128x128 crop. Made once (not at run time) by
#: generalised Procrustes over 64 faces (the 8 shared stills, 30 UTKFace and 30
#: expressive faces: neutral, smiling, surprised, open-mouthed), averaging, mirroring
#: left/right pairs to remove the sample's yaw bias, then scaling so the outer eye
#: corners are 60 px apart with their midpoint at (63.5, 40). With that, the mean mesh
#: spans y 6..117 (forehead to chin; a dropped jaw reaches ~124) and x 18..109.
TEMPLATE = np.array(
    [
        [33.50, 40.00],
        [51.64, 41.29],
        [75.36, 41.29],
        [93.50, 40.00],
        [63.50, 37.93],
        [63.50, 43.41],
        [63.50, 62.44],
        [63.50, 66.66],
        [52.14, 69.40],
        [74.86, 69.40],
        [45.03, 85.34],
        [81.97, 85.34],
    ],
    dtype=np.float64,
)


def _to3x3(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The exact inverse of a 2x3 affine (float64)."""
    return np.linalg.inv(_to3x3(matrix))[:2]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map Nx2 points (extra columns such as z are ignored) through a 2x3 affine."""
    pts = np.asarray(points, dtype=np.float64)[..., :2]
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


@dataclass(frozen=True, eq=False)
class CropTransform:
    """Similarity from frame pixels to crop pixels; kept with the face so compose can invert it."""

    matrix: np.ndarray  # 2x3 float64, frame -> crop
    size: int = CROP_SIZE
    _inverse: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64).reshape(2, 3)
        m.setflags(write=False)
        inv = invert_affine(m)
        inv.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "_inverse", inv)

    @property
    def inverse(self) -> np.ndarray:
        """2x3 crop -> frame."""
        return self._inverse

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel (how much the face is shrunk or enlarged)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.matrix, points)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self._inverse, points)


def similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, shift) taking src to dst.

    Closed form (Umeyama in 2D, where it reduces to complex-number regression): no
    iterations and no random sampling, so the same landmarks always give the same
    crop, and it can never return a reflection.
    """
    src = np.asarray(src, dtype=np.float64)[:, :2]
    dst = np.asarray(dst, dtype=np.float64)[:, :2]
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    s, d = src - ms, dst - md
    norm = w @ (s * s).sum(1)
    if norm <= 1e-12:
        raise ValueError("degenerate landmarks: all anchor points coincide")
    a = w @ (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]) / norm
    b = w @ (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]) / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def fit_transform(landmarks_px: np.ndarray, size: int = CROP_SIZE) -> CropTransform:
    """The crop transform for one face from its 478 landmarks in frame pixels (478x2 or 478x3)."""
    lm = np.asarray(landmarks_px)
    if lm.ndim != 2 or lm.shape[0] <= max(TEMPLATE_INDICES) or lm.shape[1] < 2:
        raise ValueError(f"expected 478x2 or 478x3 landmarks, got shape {lm.shape}")
    dst = TEMPLATE * (size / CROP_SIZE)
    return CropTransform(similarity(lm[list(TEMPLATE_INDICES), :2], dst, TEMPLATE_WEIGHTS), size)


def crop(image: np.ndarray, t: CropTransform) -> np.ndarray:
    """The face crop (size x size x C, same dtype); edges replicate so no black wedges enter the model."""
    return cv2.warpAffine(image, t.matrix, (t.size, t.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def uncrop(
    crop_img: np.ndarray, t: CropTransform, frame_shape: tuple[int, ...], border: int = cv2.BORDER_CONSTANT
) -> np.ndarray:
    """Warp a crop-space image (crop, attention, colour...) back to frame pixels (H x W [x C]).

    Outside the crop the result is 0 (``BORDER_CONSTANT``), which compose can use as
    "no face here"; pass ``cv2.BORDER_REPLICATE`` to extend edges instead.
    """
    h, w = int(frame_shape[0]), int(frame_shape[1])
    return cv2.warpAffine(crop_img, t.inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)


# ----------------------------------------------------------------------------- torch


def _pixel_to_norm(h: int, w: int) -> np.ndarray:
    """3x3 from pixel coords to grid_sample's [-1, 1] coords with align_corners=False."""
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])


def theta_from_matrix(
    matrices: np.ndarray | torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]
) -> torch.Tensor:
    """affine_grid thetas (N x 2 x 3, float32) that resample src into dst for pixel affines src -> dst.

    ``matrices`` map source pixels to destination pixels (as cv2.warpAffine takes them);
    affine_grid wants the opposite direction in normalised coords, so each is
    inverted and wrapped in the two normalisations, in float64.
    """
    m = matrices.detach().cpu().double().numpy() if isinstance(matrices, torch.Tensor) else np.asarray(matrices)
    m = np.asarray(m, dtype=np.float64).reshape(-1, 2, 3)
    full = np.concatenate([m, np.broadcast_to([[[0.0, 0.0, 1.0]]], (len(m), 1, 3))], axis=1)
    theta = _pixel_to_norm(*src_hw) @ np.linalg.inv(full) @ np.linalg.inv(_pixel_to_norm(*dst_hw))
    return torch.from_numpy(theta[:, :2].astype(np.float32))


def warp_torch(
    images: torch.Tensor,
    matrices: np.ndarray | torch.Tensor,
    dst_hw: tuple[int, int],
    padding_mode: str = "border",
) -> torch.Tensor:
    """Batched cv2.warpAffine equivalent (bilinear) on N x C x H x W float tensors on any device."""
    theta = theta_from_matrix(matrices, (images.shape[-2], images.shape[-1]), dst_hw).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], dst_hw[0], dst_hw[1]], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def crop_torch(frames: torch.Tensor, matrices: np.ndarray | torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """N x C x size x size crops from N x C x H x W frames; matrices N x 2 x 3, frame -> crop."""
    return warp_torch(frames, matrices, (size, size), padding_mode="border")


def uncrop_torch(crops: torch.Tensor, matrices: np.ndarray | torch.Tensor, frame_hw: tuple[int, int]) -> torch.Tensor:
    """Crops back to N x C x H x W frame pixels (0 outside the crop); matrices are frame -> crop."""
    m = matrices.detach().cpu().double().numpy() if isinstance(matrices, torch.Tensor) else np.asarray(matrices)
    inv = np.stack([invert_affine(x) for x in np.asarray(m, dtype=np.float64).reshape(-1, 2, 3)])
    return warp_torch(crops, inv, frame_hw, padding_mode="zeros")
