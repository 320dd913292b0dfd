"""Canonical crop: template, similarity fit, cv2 and torch warps, exact inverse."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rtanim.face import align
from rtanim.face.align import CROP_SIZE, TEMPLATE, TEMPLATE_INDICES, CropTransform, fit_transform
from rtanim.face.tracking import FaceTracker

STILLS = ("astronaut.png", "0-f1-su-ph.jpg", "tpsmm_source.png")


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (image, 478x3 landmarks) for a few real stills."""
    out = {}
    with FaceTracker(mode="image") as tracker:
        for name in STILLS:
            rgb = _rgb(shared_data / "stills" / name)
            out[name] = (rgb, tracker.track(rgb)[0].landmarks)
    return out


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def test_template_is_consistent_and_left_right_symmetric() -> None:
    assert TEMPLATE.shape == (len(TEMPLATE_INDICES), 2)
    assert len(align.TEMPLATE_WEIGHTS) == len(TEMPLATE_INDICES)
    assert np.all((TEMPLATE > 0) & (TEMPLATE < CROP_SIZE - 1))
    # Mirror about the crop's centre column: pairs swap, centre-line points stay.
    mirrored = TEMPLATE.copy()
    mirrored[:, 0] = (CROP_SIZE - 1) - mirrored[:, 0]
    assert np.allclose(np.sort(mirrored[:, 0]), np.sort(TEMPLATE[:, 0]), atol=0.01)


def test_similarity_recovers_a_known_transform_without_reflection() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (12, 2))
    m = _similarity(0.3, 0.4, (-20.0, 35.0))
    fitted = align.similarity(src, align.apply_affine(m, src))
    assert np.allclose(fitted, m, atol=1e-9)
    mirrored = src * [-1, 1]
    assert np.linalg.det(align.similarity(src, mirrored)[:, :2]) >= 0  # never a flip


def test_fit_transform_is_identity_for_landmarks_on_the_template() -> None:
    lm = np.random.default_rng(1).uniform(0, 128, (478, 3))
    lm[list(TEMPLATE_INDICES), :2] = TEMPLATE
    assert np.allclose(fit_transform(lm).matrix, np.eye(2, 3), atol=1e-9)
    with pytest.raises(ValueError):
        fit_transform(np.zeros((68, 2)))


def test_transform_is_immutable_and_inverse_is_exact() -> None:
    t = CropTransform(_similarity(-0.7, 0.25, (10.0, -4.0)))
    with pytest.raises(ValueError):
        t.matrix[0, 0] = 1.0
    pts = np.random.default_rng(2).uniform(-100, 1000, (478, 2))
    assert np.abs(t.to_frame(t.to_crop(pts)) - pts).max() < 1e-9
    assert t.scale == pytest.approx(0.25)


def test_real_faces_fill_the_crop_from_forehead_to_chin(faces) -> None:
    for name, (_, lm) in faces.items():
        t = fit_transform(lm)
        pts = t.to_crop(lm)
        assert np.abs(t.to_frame(pts) - lm[:, :2]).max() < 0.5, name  # the round trip the pipeline relies on
        # The whole mesh is inside with a margin, and it is not a tiny face in a big crop.
        assert pts.min() > 1 and pts.max() < CROP_SIZE - 2, name
        assert np.ptp(pts[:, 1]) > 0.75 * CROP_SIZE, name
        # Anchors land near the template (the fit is a least-squares compromise, not exact).
        err = np.linalg.norm(pts[list(TEMPLATE_INDICES)] - TEMPLATE, axis=1)
        assert np.median(err) < 3.0, name


def test_landmarks_found_again_in_the_crop_map_back_onto_the_face(faces) -> None:
    """Crop, re-detect in the 128x128 crop, map back: catches half-pixel and direction mistakes."""
    with FaceTracker(mode="image") as tracker:
        for name, (rgb, lm) in faces.items():
            t = fit_transform(lm)
            found = tracker.track(align.crop(rgb, t))
            assert len(found) == 1, name
            d = found[0].landmarks[:, :2] - t.to_crop(lm)
            assert np.median(np.linalg.norm(d, axis=1)) < 0.75, name  # measured 0.30-0.47 crop px
            assert np.abs(d.mean(0)).max() < 0.3, name  # measured <= 0.17; half a pixel would show


def test_uncrop_puts_the_face_back(faces) -> None:
    rgb, lm = faces["astronaut.png"]
    t = fit_transform(lm)
    back = align.uncrop(align.crop(rgb, t), t, rgb.shape)
    assert back.shape == rgb.shape
    x0, y0 = lm[:, :2].min(0).astype(int) + 10
    x1, y1 = lm[:, :2].max(0).astype(int) - 10
    diff = np.abs(back[y0:y1, x0:x1].astype(int) - rgb[y0:y1, x0:x1].astype(int))
    assert diff.mean() < 4.0  # two bilinear resamplings at scale ~1 blur a little, no shift
    assert back[0, 0].sum() == 0 and back[-1, -1].sum() == 0  # outside the crop: nothing


def test_torch_crop_matches_cv2(faces) -> None:
    frames, mats, refs = [], [], []
    for name in ("astronaut.png", "0-f1-su-ph.jpg"):  # same size, scale ~1 and ~0.34
        rgb, lm = faces[name]
        t = fit_transform(lm)
        rot = _similarity(0.2, 1.0, (0, 0))  # extra rotation about the crop centre
        rot[:, 2] = 63.5 - rot[:, :2] @ [63.5, 63.5]
        m = rot @ np.vstack([t.matrix, [0, 0, 1]])
        frames.append(torch.from_numpy(rgb).permute(2, 0, 1).float())
        mats.append(m)
        refs.append(align.crop(rgb, CropTransform(m)).astype(np.float32))
    out = align.crop_torch(torch.stack(frames), torch.from_numpy(np.stack(mats)))
    assert out.shape == (2, 3, CROP_SIZE, CROP_SIZE)
    for got, ref in zip(out.permute(0, 2, 3, 1).numpy(), refs, strict=True):
        diff = np.abs(got - ref)[4:-4, 4:-4]
        assert diff.max() <= 1.0  # cv2 rounds to uint8 and interpolates in 1/32 px steps
        assert diff.mean() < 0.4


def test_torch_uncrop_matches_cv2(faces) -> None:
    rgb, lm = faces["astronaut.png"]
    t = fit_transform(lm)
    c = align.crop(rgb, t)
    ref = align.uncrop(c, t, rgb.shape).astype(np.float32)
    got = align.uncrop_torch(torch.from_numpy(c).permute(2, 0, 1)[None].float(), t.matrix[None], rgb.shape[:2])
    got = got[0].permute(1, 2, 0).numpy()
    inside = align.uncrop(np.full((CROP_SIZE, CROP_SIZE), 255, np.uint8), t, rgb.shape) == 255
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.abs(got - ref)[inside].max() <= 1.0


def test_theta_of_identity_is_identity() -> None:
    theta = align.theta_from_matrix(np.eye(2, 3)[None], (128, 128), (128, 128))
    assert torch.allclose(theta, torch.eye(2, 3)[None], atol=1e-6)
