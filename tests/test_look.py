"""What a person sees: the mouth / lid figures and the held-out critic of the self-reenactment test."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from rtanim.measure import critic
from rtanim.measure.look import lid_look, mouth_look, sharpness, white_share
from rtanim.models.geometry import AUBasis


def test_sharpness_falls_with_blur_and_is_nan_on_a_tiny_region():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    sharp = sharpness(img, mask)
    assert sharp > 0 and sharpness(cv2.GaussianBlur(img, (7, 7), 2.0), mask) < 0.1 * sharp
    tiny = np.zeros_like(mask)
    tiny[0, 0] = True
    assert math.isnan(sharpness(img, tiny))


def test_white_share_counts_white_not_red_or_dark_against_the_lips():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = (235, 232, 225)  # teeth / sclera: bright, low chroma
    img[:20, 20:] = (190, 60, 70)  # lip: red
    lips = np.zeros((40, 40), bool)
    lips[:20, 20:] = True
    inside = ~lips
    assert white_share(img, inside, lips) == pytest.approx(2 / 3)  # the white columns: two thirds of the inside
    dark = img.copy()
    dark[inside] = (30, 10, 10)  # a cavity
    assert white_share(dark, inside, lips) == 0.0
    assert math.isnan(white_share(img, inside, np.zeros_like(lips)))


def test_white_share_in_a_grey_photo_goes_by_light_alone():
    img = np.full((40, 40, 3), 120, np.uint8)  # grey skin round the eye
    eye = np.zeros((40, 40), bool)
    eye[10:30, 10:30] = True
    img[10:30, 10:20] = 200  # the white of the eye, as grey as everything else
    img[10:30, 20:30] = 125  # a lid, about the skin's light
    assert white_share(img, eye, ~eye) == pytest.approx(0.5)


def test_closed_eyes_reports_read_back_sclera_and_identity(shared_data, tmp_path):
    """calib/closed_eyes.py on one held-out still: every figure for each model, and the strip."""
    import json

    from calib.closed_eyes import main

    assert main(["-o", str(tmp_path / "ce"), "--faces", "1", "--data", str(shared_data / "faces" / "expressive"),
                 "warp"]) == 0
    got = json.loads((tmp_path / "ce" / "closed_eyes.json").read_text())
    assert got["faces"] == 1 and len(got["rows"]["warp"]["au45"]) == 3  # eyes_closed and both winks
    assert 0.0 <= got["summary"]["warp"]["sclera"] <= 1.0 and 0.0 <= got["summary"]["input"]["sclera"] <= 1.0
    assert (tmp_path / "ce" / "eyes_strip.png").is_file()
    assert main(["-o", str(tmp_path / "bad"), "--data", str(tmp_path / "none"), "warp"]) == 2
    assert not (tmp_path / "bad").exists()


def test_mouth_and_lid_look_on_a_face_shape():
    from rtanim.face.landmarks import EYES, INNER_MOUTH, polygon_mask

    face = AUBasis.load().mean.astype(np.float64)[:, :2].copy()
    face[[14, 87, 178, 88, 95, 317, 402, 318, 324], 1] += 8.0  # the inner lower lip down: an open mouth
    inner = polygon_mask(face, [INNER_MOUTH], 128) > 0.5
    real = np.full((128, 128, 3), (170, 120, 110), np.uint8)
    rng = np.random.default_rng(1)
    teeth = np.where(rng.random((128, 128, 1)) < 0.5, (240, 238, 230), (40, 20, 20)).astype(np.uint8)
    real[inner] = teeth[inner]
    blur = real.copy()
    blur[inner] = cv2.GaussianBlur(real, (9, 9), 3.0)[inner]
    look = mouth_look(blur, real, face)
    assert look["mouth_sharpness"] < 0.5 and 0.3 < look["teeth_real"] < 0.7 and look["teeth_out"] < look["teeth_real"]
    assert mouth_look(real, real, face)["mouth_sharpness"] == pytest.approx(1.0)
    eyes = polygon_mask(face, EYES, 128) > 0.5
    shut = np.full((128, 128, 3), (170, 120, 110), np.uint8)
    open_eye = shut.copy()
    open_eye[eyes] = (235, 235, 230)  # white left showing
    assert lid_look(open_eye, shut, face) == {"sclera_out": 1.0, "sclera_real": 0.0}


def test_roc_auc_orders_and_ties():
    y = np.array([0, 0, 1, 1])
    assert critic.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert critic.roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert critic.roc_auc(np.zeros(4), y) == 0.5
    assert math.isnan(critic.roc_auc(np.zeros(2), np.zeros(2)))


def test_auc_interval_is_tight_on_a_clean_split_and_wide_on_a_few_coin_flips():
    y = np.array([0] * 20 + [1] * 20)
    assert critic.auc_interval(y.astype(float), y) == (1.0, 1.0)
    lo, hi = critic.auc_interval(np.random.default_rng(1).random(40), y)
    assert lo < 0.5 < hi and hi - lo > 0.2  # 20 patches a side: the AUC is known to tenths, no better
    assert all(math.isnan(x) for x in critic.auc_interval(np.zeros(3), np.zeros(3)))


def test_held_out_critic_tells_flat_fakes_and_not_real_copies():
    rng = np.random.default_rng(0)
    real = [cv2.GaussianBlur(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), (3, 3), 0.8) for _ in range(24)]
    groups = [f"p{i % 4}" for i in range(24)]
    flat = [np.full_like(r, int(r.mean())) for r in real]
    assert critic.held_out_auc(real, flat, groups, steps=150) > 0.9
    same = critic.held_out_auc(real, [r.copy() for r in real], groups, steps=150)
    assert 0.3 <= same <= 0.7
    assert math.isnan(critic.held_out_auc(real, flat, ["one"] * 24))


def _tracked_blinks(blinks: list[float]) -> list:
    """Frames of one still face (every pose matches) with these AU45 readings and no other AU."""
    from types import SimpleNamespace

    lm = np.random.default_rng(0).uniform(0, 128, (478, 3))
    crop_is_frame = SimpleNamespace(to_crop=lambda pts: pts)
    return [(None, SimpleNamespace(landmarks=lm, transform=crop_is_frame, aus={"AU45": b})) for b in blinks]


def test_more_closed_eye_targets_leave_the_first_pairs_as_they_were():
    from rtanim.measure.reenact import ReenactOptions, choose_pairs

    blinks = [0.0] * 60
    for peak in (12, 25, 38, 51):  # four blinks, each three frames long
        blinks[peak - 1:peak + 2] = [0.7, 0.9, 0.7]
    tracked = _tracked_blinks(blinks)
    one = choose_pairs(tracked, 6, ReenactOptions(closed_per_clip=1), np.random.default_rng(0))
    three = choose_pairs(tracked, 6, ReenactOptions(closed_per_clip=3), np.random.default_rng(0))
    assert three[:len(one)] == one and len(one) == 6
    extra = three[len(one):]
    assert extra and [k for *_, k in extra] == ["closed_eyes"] * len(extra)
    assert all(blinks[t] > 0.6 for _, t, _ in extra)
    targets = sorted(t for _, t, _ in three)
    assert min(np.diff(targets)) > 5  # spread in time, never two frames of one blink


def test_self_reenactment_reports_what_a_person_sees(shared_data, tmp_path):
    from rtanim.measure.reenact import LOOK_COLUMNS, ReenactOptions, evaluate_reenact

    clip = shared_data / "video" / "single_face.mp4"
    r = evaluate_reenact("warp", clip, tmp_path / "rep", ReenactOptions(pairs_per_clip=3, max_frames=40))
    for row in r.rows.values():
        assert "critic_mouth_auc" in row and "critic_eyes_auc" in row and "mouth_sharpness" in row
        assert "critic_mouth_auc_ci" in row and row["critic_mouth_pairs"] >= 0
    md = (tmp_path / "rep" / "reenact.md").read_text()
    assert "## What a person sees" in md and all(label in md for _, label in LOOK_COLUMNS)
    json.loads((tmp_path / "rep" / "reenact.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert (tmp_path / "rep" / "reenact.png").is_file()


def _report(**candidate) -> dict:
    base = {"mouth_psnr": 21.0, "eye_psnr": 22.0, "expression": 0.04, "AU25_err": 0.1, "AU26_err": 0.1,
            "AU45_err": 0.04, "identity": 0.24, "teeth_real": 0.2, "blink_real": 0.8}
    warp = base | {"mouth_sharpness": 0.3, "teeth_out": 0.02, "sclera_out": 0.2, "blink_ratio": 0.5,
                   "critic_mouth_auc": 0.9, "critic_eyes_auc": 0.8, "mouth_psnr": 20.7, "eye_psnr": 21.8}
    default = base | {"mouth_sharpness": 0.2, "teeth_out": 0.05, "sclera_out": 0.2, "blink_ratio": 0.6,
                      "critic_mouth_auc": 0.95, "critic_eyes_auc": 0.85}
    good = base | {"mouth_sharpness": 0.8, "teeth_out": 0.15, "sclera_out": 0.05, "blink_ratio": 0.9,
                   "critic_mouth_auc": 0.7, "critic_eyes_auc": 0.7}
    return {"rows": {"warp": warp, "default": default, "new": good | candidate}}


def test_look_gate_reads_every_figure_and_names_each_miss(tmp_path, capsys):
    from calib.look_gate import main

    def run(report: dict) -> int:
        (tmp_path / "reenact.json").write_text(json.dumps(report))
        return main(["new", "--reenact", str(tmp_path)])

    assert run(_report()) == 0 and "gate met" in capsys.readouterr().out
    assert run(_report(mouth_sharpness=0.4)) == 1 and "mouth sharpness" in capsys.readouterr().out.splitlines()[-1]
    assert run(_report(teeth_out=0.5)) == 1 and "teeth share" in capsys.readouterr().out.splitlines()[-1]
    assert run(_report(critic_eyes_auc=0.8)) == 1 and "critic AUC, eyes" in capsys.readouterr().out.splitlines()[-1]
    assert run(_report(mouth_psnr=20.0)) == 1 and "mouth PSNR" in capsys.readouterr().out.splitlines()[-1]
    del_row = _report()
    del del_row["rows"]["default"]
    assert run(del_row) == 2


@pytest.mark.parametrize("option", ["--pairs", "--closed", "--examples"])
def test_reenact_models_refuses_a_negative_count_before_any_work(tmp_path, capsys, option):
    from calib.reenact_models import main

    assert main(["-o", str(tmp_path / "out"), option, "-1", "warp2=warp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "0 or more" in err[0]
    assert not (tmp_path / "out").exists()
