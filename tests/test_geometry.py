"""geometry: the fitted AU basis moves the right landmarks, the dense flow matches it, and the
``warp`` model changes the AUs the tracker measures, in the intended direction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtanim.expression.aus import AU_CODES, preset_aus, to_vector
from rtanim.face.compose import FaceOutput, compose
from rtanim.models.geometry import (
    AUBasis,
    WarpFace,
    WarpModel,
    apply_warp,
    fit_basis,
    flow_targets,
    mirror_permutation,
)

MOUTH_L, MOUTH_R, LOWER_LIP, CHIN = 61, 291, 17, 152  # image left / right mouth corners (MediaPipe mesh)


@pytest.fixture(scope="module")
def basis() -> AUBasis:
    return AUBasis.load()


@pytest.fixture(scope="module")
def model(basis) -> WarpModel:
    return WarpModel(basis)


def motion(basis: AUBasis, aus: dict[str, float]) -> np.ndarray:
    return basis.displacement(basis.vector(aus))


def sample_px(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of a [2,S,S] normalised flow at crop-pixel points, in crop pixels."""
    half = flow.shape[-1] / 2.0
    mx, my = pts[:, 0:1].astype(np.float32), pts[:, 1:2].astype(np.float32)
    return np.stack([cv2.remap(flow[c] * half, mx, my, cv2.INTER_LINEAR)[:, 0] for c in range(2)], 1)


def test_smile_moves_mouth_corners_up_and_out(basis):
    d = motion(basis, {"AU12": 1.0})
    # Measured with the shipped fit: 61 -> (-5.5, -5.1), 291 -> (+5.5, -5.1) crop px.
    assert d[MOUTH_L, 0] < -2 and d[MOUTH_L, 1] < -2
    assert d[MOUTH_R, 0] > 2 and d[MOUTH_R, 1] < -2


def test_jaw_drop_moves_lower_lip_and_chin_down(basis):
    d = motion(basis, {"AU26": 1.0})
    # Measured: lower lip +7.5 px, chin +4.2 px (y grows downwards).
    assert d[LOWER_LIP, 1] > 3
    assert d[CHIN, 1] > 2
    assert abs(d[LOWER_LIP, 0]) < 1


def test_sided_bases_mirror_each_other(basis):
    perm = basis.mirror
    assert np.array_equal(perm, mirror_permutation())
    assert perm[MOUTH_L] == MOUTH_R and perm[33] == 263 and perm[468] == 473
    assert np.array_equal(perm[perm], np.arange(len(perm)))
    left, right = motion(basis, {"AU12L": 1.0}), motion(basis, {"AU12R": 1.0})
    assert np.allclose(left[perm] * [-1, 1], right, atol=0.05)
    assert np.linalg.norm(left[MOUTH_R]) > 3 * np.linalg.norm(left[MOUTH_L])  # one side moves


def test_fit_basis_recovers_a_known_linear_model():
    rng = np.random.default_rng(0)
    mean, true_b = rng.normal(size=(20, 2)), rng.normal(size=(3, 20, 2))
    aus, pose = rng.random((500, 3)), rng.normal(size=(500, 2))
    pose_b = rng.normal(size=(2, 20, 2))
    x = mean + np.tensordot(aus, true_b, 1) + np.tensordot(pose, pose_b, 1) + rng.normal(0, 0.01, (500, 20, 2))
    m, b, _ = fit_basis(x, aus, pose, ridge=1e-3)
    assert np.abs(b - true_b).max() < 0.02 and np.abs(m - mean).max() < 0.02


@pytest.mark.parametrize("target", ["big_smile", "eyes_closed", "surprise"])
def test_dense_flow_reproduces_landmark_motion(model, basis, target):
    src = basis.mean.copy()
    flow = model.flow(src, {}, preset_aus(target))
    d = model.landmark_motion({}, preset_aus(target))
    ctrl = basis.controls
    dst = src[ctrl] + d[ctrl]
    # Backward flow: the output pixel at the moved landmark samples the input at the source.
    err = np.linalg.norm(sample_px(flow, dst) + d[ctrl], axis=1)
    assert np.abs(d[ctrl]).max() > 3  # a real motion
    assert err.max() < 0.5, f"max {err.max():.2f} px at landmark {ctrl[err.argmax()]}"


def test_zero_delta_gives_zero_flow_and_identity(model, basis):
    live = {"AU12": 0.7, "AU26": 0.2}
    flow = model.flow(basis.mean, live, live)
    assert flow.shape == (2, 128, 128) and not flow.any()
    frame = np.random.default_rng(0).integers(0, 256, (200, 220, 3), np.uint8)
    outs = model.run_faces([WarpFace(basis.mean, live, live)])
    assert (outs.attention == 1).all()
    from rtanim.face.align import CropTransform

    t = CropTransform(np.array([[0.9, 0.1, -20.0], [-0.1, 0.9, -10.0]]))
    face = FaceOutput(outs.attention[0], outs.color[0], outs.flow[0])
    assert np.array_equal(compose(frame, [face], [t]), frame)


def test_flow_targets_match_the_dense_flow_under_grid_sample(model, basis):
    """Supervision and the warp model share one convention: grid_sample of F at ``points`` gives ``flow``."""
    delta = to_vector(preset_aus("big_smile"), basis.codes) - 0.0
    targets = flow_targets(basis.mean, delta, basis)
    flow = torch.from_numpy(model.flow(basis.mean, np.zeros(len(basis.codes)), delta))[None]
    grid = torch.from_numpy(targets.points).float()[None, None]  # 1 x 1 x P x 2
    sampled = F.grid_sample(flow, grid, mode="bilinear", align_corners=False)[0, :, 0].T.numpy()
    assert np.abs(targets.flow).max() * 64 > 3
    assert np.abs(sampled - targets.flow).max() * 64 < 0.5  # crop pixels


def test_plain_17_au_vectors_drive_an_extended_basis(basis):
    v = to_vector(preset_aus("smile"), AU_CODES)
    assert np.allclose(basis.vector(v), basis.vector(preset_aus("smile")))


# ------------------------------------------------------------------ end to end, through the tracker


def _track(tracker, rgb):
    faces = tracker.track(rgb)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="module")
def tracker(shared_data):
    from rtanim.face.tracking import FaceTracker

    with FaceTracker(1, mode="image") as t:
        yield t


def _still(shared_data, name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(shared_data / "stills" / name)), cv2.COLOR_BGR2RGB)


def test_neutral_target_removes_the_astronauts_smile(shared_data, tracker, model):
    img = _still(shared_data, "astronaut.png")
    face = _track(tracker, img)
    out = apply_warp(img, [face], preset_aus("neutral"), model)
    after = _track(tracker, out)
    # Measured: AU12 0.94 -> 0.02.
    assert face.aus["AU12"] > 0.6
    assert face.aus["AU12"] - after.aus["AU12"] > 0.4, (face.aus["AU12"], after.aus["AU12"])


def test_smile_target_raises_au12_on_a_non_smiling_face(shared_data, tracker, model):
    img = _still(shared_data, "15-f13-anc-ph.jpg")  # frontal, AU12 = 0
    face = _track(tracker, img)
    out = apply_warp(img, [face], preset_aus("smile"), model)
    after = _track(tracker, out)
    # Measured: AU12 0.00 -> 0.67.
    assert after.aus["AU12"] - face.aus["AU12"] > 0.3, (face.aus["AU12"], after.aus["AU12"])
    x0, y0, x1, y1 = face.bbox
    outside = np.ones(img.shape[:2], bool)
    outside[max(y0 - 80, 0) : y1 + 80, max(x0 - 80, 0) : x1 + 80] = False
    assert np.array_equal(out[outside], img[outside])
