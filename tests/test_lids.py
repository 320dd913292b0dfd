"""The closed-lid layer of the refine model (rtanim.models.lids), on a drawn face and on the demo face."""

from __future__ import annotations

import numpy as np
import pytest

from rtanim.face.landmarks import BROWS_LOWER, EYES, LOWER_LIDS, N_LANDMARKS, UPPER_LIDS, polygon_mask
from rtanim.models.lids import Lids, closing, lid_layer, opening, paint_lids

SIZE = 128
SKIN = (200, 150, 120)
CENTRES = ((44.0, 52.0), (84.0, 52.0))  # EYE_A, EYE_B
WIDTH = 24.0


def face_landmarks(open_share: float = 1.0) -> np.ndarray:
    """Landmarks of two almond eyes (half-height 5 px times ``open_share``) and brows above them."""
    lm = np.full((N_LANDMARKS, 2), 64.0)
    for eye, (cx, cy) in enumerate(CENTRES):
        for loop, sign in ((UPPER_LIDS[eye], -1.0), (LOWER_LIDS[eye][::-1], 1.0)):
            t = np.linspace(-1.0, 1.0, len(loop))
            x = cx + t * WIDTH / 2 * (1 if eye == 0 else -1)
            y = cy + sign * 5.0 * open_share * (1 - t**2)
            lm[list(loop)] = np.stack([x, y], 1)
        t = np.linspace(-1.0, 1.0, len(BROWS_LOWER[eye]))
        lm[list(BROWS_LOWER[eye])] = np.stack([cx + t * 14 * (1 if eye == 0 else -1), cy - 13 + 0 * t], 1)
    return lm


def face_crop(landmarks: np.ndarray, lens: bool = False) -> np.ndarray:
    """Skin with white eyes, dark irises and lashes (or dark lenses) where the landmarks put the eyes."""
    import cv2

    crop = np.empty((SIZE, SIZE, 3), np.uint8)
    crop[:] = SKIN
    for upper in UPPER_LIDS:
        cv2.polylines(crop, [np.round(landmarks[list(upper)] - [0, 1]).astype(np.int32)], False, (40, 30, 25), 2)
    eyes = polygon_mask(landmarks, EYES, SIZE) > 0.5
    if lens:  # a lens reaches well beyond the eye
        crop[cv2.dilate(eyes.astype(np.uint8), np.ones((15, 9), np.uint8)) > 0] = (25, 25, 25)
        return crop
    crop[eyes] = (235, 235, 235)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for cx, cy in CENTRES:
        crop[eyes & ((xx - cx) ** 2 + (yy - cy) ** 2 < 16)] = (60, 40, 30)
    return crop


def test_opening_and_closing_read_the_eye_apertures():
    open_lm, shut = face_landmarks(1.0), face_landmarks(0.05)
    assert 0.1 < opening(open_lm, 0) < 0.4 and opening(shut, 0) < 0.02
    assert closing(open_lm, shut, 0) == 1.0 and closing(open_lm, open_lm, 1) == 0.0
    assert closing(open_lm, face_landmarks(0.8), 0) == 0.0  # a squint keeps the warp's eye
    assert 0.0 < closing(open_lm, face_landmarks(0.47), 0) < 1.0  # a blink on its way: part of a lid
    assert closing(shut, face_landmarks(0.01), 0) == 0.0  # already shut: nothing to paint


def test_no_lid_where_no_eye_closes():
    lm = face_landmarks(1.0)
    crop = face_crop(lm)
    assert lid_layer(crop, lm, face_landmarks(0.9), None) is None


def test_a_closing_eye_gets_skin_and_a_dark_lash_line_not_white():
    src, tgt = face_landmarks(1.0), face_landmarks(0.05)
    crop = face_crop(src)
    lids = lid_layer(crop, src, tgt, None)
    assert lids is not None and lids.alpha.shape == (SIZE, SIZE) and lids.color.shape == (3, SIZE, SIZE)
    colour = (lids.color.transpose(1, 2, 0) + 1.0) * 127.5
    for cx, cy in CENTRES:
        x, y = int(cx), int(cy)
        assert lids.alpha[y - 3, x] > 0.9  # the lid covers what was the eye
        lid = colour[y - 3, x]
        assert np.abs(lid - SKIN).max() < 30  # skin-coloured, not the white or the iris
        column = colour[y - 6 : y + 6, x] @ np.array([0.299, 0.587, 0.114])
        assert column.min() < 0.6 * (np.array(SKIN) @ np.array([0.299, 0.587, 0.114]))  # a lash line
    assert lids.alpha[5:20].max() == 0.0 and lids.alpha[:, :8].max() == 0.0  # nothing far from the eyes


def test_only_the_winking_eye_is_painted():
    src = face_landmarks(1.0)
    tgt = src.copy()
    tgt[list(UPPER_LIDS[1]) + list(LOWER_LIDS[1])] = face_landmarks(0.05)[list(UPPER_LIDS[1]) + list(LOWER_LIDS[1])]
    lids = lid_layer(face_crop(src), src, tgt, None)
    assert lids is not None
    assert lids.alpha[:, :58].max() < 0.01 and lids.alpha[:, 70:].max() > 0.9  # the other eye (x 32-56) stays


def test_a_lid_needs_the_eye_asked_shut_not_only_a_warp_that_closes_it():
    src, tgt = face_landmarks(1.0), face_landmarks(0.05)
    crop = face_crop(src)
    assert lid_layer(crop, src, tgt, None, shut=(0.3, 0.4)) is None  # half-closed targets: the warp's eyes
    lids = lid_layer(crop, src, tgt, None, shut=(0.3, 1.0))
    assert lids is not None and lids.alpha[:, :58].max() < 0.01 and lids.alpha[:, 70:].max() > 0.9


def test_a_dark_lens_is_left_alone_but_an_eye_in_shadow_is_not():
    src = face_landmarks(1.0)
    crop = face_crop(src, lens=True)
    assert lid_layer(crop, src, face_landmarks(0.05), None) is None
    shadow = face_crop(src)
    shadow[polygon_mask(src, EYES, SIZE) > 0.5] = (30, 30, 30)  # a dark eye, bright skin under it
    assert lid_layer(shadow, src, face_landmarks(0.05), None) is not None


def test_paint_lids_composites_the_lid_over_the_model_output():
    rng = np.random.default_rng(0)
    att = rng.uniform(0, 1, (1, 8, 8)).astype(np.float32)
    col = rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32)
    warped = rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32)
    alpha = rng.uniform(0, 1, (8, 8)).astype(np.float32)
    reset = np.maximum(alpha, rng.uniform(0, 1, (8, 8))).astype(np.float32)
    alpha[0] = reset[0] = 0.0
    lid = rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32)
    a2, c2 = paint_lids(att, col, Lids(alpha, lid, reset))
    before = att * warped + (1 - att) * col
    want = (1 - alpha) * (reset * warped + (1 - reset) * before) + alpha * lid
    np.testing.assert_allclose(a2 * warped + (1 - a2) * c2, want, atol=1e-5)
    np.testing.assert_array_equal(a2[:, 0], att[:, 0])  # no lid: the output as it was


@pytest.fixture(scope="module")
def demo_face():
    from rtanim.commands.demo import sample_image_path
    from rtanim.commands.image import read_image, track_still

    image = read_image(sample_image_path())
    return image, track_still(image, 1)[0]


def test_the_refine_model_paints_lids_only_when_its_spec_says_so(tmp_path, demo_face):
    from dataclasses import replace

    from rtanim.expression.timeline import timeline_from_dict
    from rtanim.face.align import crop
    from rtanim.models.refine import RefineNet, RefineSpec, save_refine
    from rtanim.pipeline.generators import RefineGenerator
    from rtanim.pipeline.jobs import FaceJob

    image, face = demo_face
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = RefineNet(RefineSpec(widths=(8, 8, 8), n_res=1))
    save_refine(net, tmp_path / "plain.safetensors")
    with_lids = RefineNet(replace(net.spec, lids=True))
    with_lids.load_state_dict(net.state_dict())
    save_refine(with_lids, tmp_path / "lids.safetensors")
    gens = [RefineGenerator(tmp_path / name, engine="torch") for name in ("plain.safetensors", "lids.safetensors")]
    assert gens[1].lids and not gens[0].lids
    job = lambda preset: FaceJob(face, crop(image, face.transform),  # noqa: E731
                                 timeline_from_dict({"preset": preset}).at(0.0, face.aus))
    smile = [g.generate([job("smile")])[0] for g in gens]
    np.testing.assert_array_equal(smile[0].attention, smile[1].attention)  # no eye closes: untouched
    shut = [g.generate([job("eyes_closed")])[0] for g in gens]
    changed = np.abs(shut[0].attention - shut[1].attention)[0] > 1e-4
    ys, xs = np.nonzero(changed)
    assert len(ys) > 50
    eyes = face.transform.to_crop(face.landmarks)[[i for loop in EYES for i in loop], :2]
    assert eyes[:, 1].min() - 20 < ys.min() and ys.max() < eyes[:, 1].max() + 10  # only round the eyes
