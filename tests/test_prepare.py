"""rtanim prepare: crops, AU labels and landmarks from stills and a video; the GANimation layout; safe pickles."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rtanim.cli.app import app
from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES, EXTENDED_CODES
from train.dataset import code_matrix, flip_permutation, load_dataset
from train.extract import head_yaw, identity_group, utk_age
from train.ganimation_layout import GanimationLayout, load_au_pickle, read_ganimation, write_ganimation
from train.parts import TABLE_CODES
from train.prepare import PrepareOptions, prepare, read_au_table, split_groups

STILLS = ("single_face.jpg", "astronaut.png", "0-f15-hao-ph.jpg", "0-f1-su-ph.jpg")


@pytest.fixture(scope="module")
def prepared(shared_data: Path, tmp_path_factory) -> tuple[Path, Path, object]:
    src = tmp_path_factory.mktemp("src")
    for name in STILLS:
        shutil.copy(shared_data / "stills" / name, src / name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path_factory.mktemp("ds") / "dataset"
    shard = out.parent / "dataset.safetensors"
    sources = [src, shared_data / "video" / "single_face.mp4"]
    result = prepare(sources, out, PrepareOptions(fps=5.0, test_fraction=0.4), shard=shard, progress=False)
    result.sources = sources
    return out, shard, result


def test_prepare_writes_crops_aus_and_landmarks(prepared):
    out, _, result = prepared
    assert result.total >= 10 and result.train > 0 and result.test > 0
    assert any("broken.jpg" in p for p in result.problems) and result.skipped["unreadable image"] == 1
    names, test, aus, codes = read_au_table(out / "aus.csv")
    assert codes == TABLE_CODES and len(names) == result.total and aus.min() >= 0 and aus.max() <= 1
    assert all((out / "imgs" / f"{n}.jpg").is_file() for n in names)
    lm = np.load(out / "landmarks.npy")
    assert lm.shape == (len(names), 478, 3)
    inside = (lm[..., :2] > -8) & (lm[..., :2] < 136)  # the crop frames the whole face with a margin
    assert inside.mean() > 0.99
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["total"] == result.total and len(meta["fingerprint"]) == 32
    assert set(meta["au_histograms"]) >= set(TABLE_CODES)
    # held out by video: every frame of the clip lands in one split
    video = [t for n, t in zip(names, test, strict=True) if "_f0" in n]
    assert len(video) >= 5 and len(set(video)) == 1


def test_dataset_loads_from_folder_and_shard(prepared):
    out, shard, result = prepared
    a, b = load_dataset(out, "all"), load_dataset(shard, "all")
    assert len(a) == len(b) == result.total and a.images.shape[1:] == (3, 128, 128) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and np.allclose(a.aus, b.aus, atol=1e-4)
    assert np.allclose(a.landmarks, b.landmarks, atol=0.1)  # float16 in the shard
    assert a.fingerprint == b.fingerprint
    assert len(load_dataset(out, "train")) == result.train and len(load_dataset(out, "test")) == result.test
    v = a.vectors(EXTENDED_CODES)
    assert v.shape == (len(a), len(EXTENDED_CODES))


def test_prepare_resumes_without_redoing_parts(prepared, monkeypatch):
    out, _, result = prepared
    import train.prepare as tp

    def boom(*a, **k):
        raise AssertionError("a finished part was processed again")

    monkeypatch.setattr(tp, "process_images", boom)
    monkeypatch.setattr(tp, "process_video", boom)
    again = prepare(result.sources, out, PrepareOptions(fps=5.0, test_fraction=0.4), progress=False)
    assert again.total == result.total


def test_ganimation_layout_round_trips(prepared, tmp_path):
    out, _, _ = prepared
    layout = read_ganimation(out)
    names, test, aus, _ = read_au_table(out / "aus.csv")
    assert layout.train_ids == [n for n, t in zip(names, test, strict=True) if not t]
    assert np.allclose(np.stack([layout.aus[n] for n in names]) / 5.0, aus[:, :17], atol=1e-4)
    write_ganimation(tmp_path, layout)
    again = read_ganimation(tmp_path)
    assert again.train_ids == layout.train_ids and again.test_ids == layout.test_ids
    assert all(np.array_equal(again.aus[k], layout.aus[k]) for k in layout.aus)
    # an original-layout folder (imgs + pickle + ids only) trains like ours, with the 17 AUs
    shutil.copytree(out / "imgs", tmp_path / "imgs")
    orig = load_dataset(tmp_path, "train")
    ours = load_dataset(out, "train")
    assert orig.names == ours.names and orig.codes == AU_CODES and orig.landmarks is None
    assert np.allclose(orig.aus, ours.vectors(AU_CODES), atol=1e-4)
    with pytest.raises(InputError, match="one-sided"):
        orig.vectors(EXTENDED_CODES)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rtanim_pwned",))


def test_malicious_au_pickle_is_refused(tmp_path):
    bad = tmp_path / "aus_openface.pkl"
    bad.write_bytes(pickle.dumps({"face": _Evil()}, protocol=2))
    with pytest.raises(InputError, match="refusing"):
        load_au_pickle(bad)
    bad.write_bytes(pickle.dumps({"face": np.arange(3.0)}))
    with pytest.raises(InputError, match="17 AU values"):
        load_au_pickle(bad)
    good = tmp_path / "good.pkl"
    write_ganimation(tmp_path, GanimationLayout({"a": np.linspace(0, 5, 17)}, ["a"], []))
    assert np.allclose(load_au_pickle(tmp_path / "aus_openface.pkl")["a"], np.linspace(0, 5, 17))
    good.write_bytes(b"not a pickle")
    with pytest.raises(InputError):
        load_au_pickle(good)


def test_helpers():
    rot = np.eye(4)
    assert abs(head_yaw(rot)) < 1e-9
    a = np.radians(30)
    rot[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    assert abs(head_yaw(rot * 2.0) - 30) < 1e-6  # scale in the matrix does not matter
    groups = [f"g{i}" for i in range(20)]
    assert split_groups(groups, 0.1, 0) == split_groups(list(reversed(groups)), 0.1, 0)
    assert len(split_groups(groups, 0.1, 0)) == 2 and split_groups(["only"], 0.5, 0) == set()
    m = code_matrix(("AU12", "AU12L", "AU12R"), ("AU12", "AU12L"))
    assert np.allclose(m, [[1, 0, 0], [0, 1, 0]])
    assert np.allclose(code_matrix(("AU12L", "AU12R"), ("AU12",)), [[0.5, 0.5]])
    perm = flip_permutation(("AU01", "AU12L", "AU12R"))
    assert perm.tolist() == [0, 2, 1]


def test_prepare_cli_reports_bad_input(tmp_path):
    res = CliRunner().invoke(app, ["prepare", str(tmp_path / "missing"), "-o", str(tmp_path / "ds")])
    assert res.exit_code == 2 and "no such file" in res.output and "Traceback" not in res.output


def test_identity_groups_and_ages():
    assert identity_group("/x/Al_Gore_0002.jpg") == identity_group("/y/Al_Gore_0011.jpg") == "person:al_gore"
    assert identity_group("/x/Alvaro_Silva_Calderon_0001.jpg") == "person:alvaro_silva_calderon"
    # UTKFace and other names: one group per source image, so two files never share a group by accident
    a, b = identity_group("/u/25_0_1_20170104004153743.jpg.chip.jpg"), identity_group("/u/single_face.jpg")
    assert a.startswith("image:") and b.startswith("image:") and a != b
    assert utk_age("/u/7_1_0_20170109204500123.jpg.chip.jpg") == 7 and utk_age("/u/single_face.jpg") is None


def test_split_keeps_each_person_on_one_side(shared_data: Path, tmp_path):
    """Two photos of one person (LFW-style names) land on the same side; --min-age skips young UTKFace names."""
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(("Some_Person_0001.jpg", "Some_Person_0002.jpg", "Other_Person_0001.jpg")):
        shutil.copy(shared_data / "stills" / STILLS[i], src / name)
    shutil.copy(shared_data / "stills" / "15-f13-anc-ph.jpg", src / "5_1_0_20170109204500123.jpg.chip.jpg")
    shutil.copy(shared_data / "stills" / "0-f1-su-ph.jpg", src / "30_1_0_20170109204500124.jpg.chip.jpg")
    out = tmp_path / "ds"
    res = prepare([src], out, PrepareOptions(test_fraction=0.5, min_age=10), progress=False)
    assert res.skipped.get("under min age") == 1 and res.total == 4
    rows = [r.split(",")[:3] for r in (out / "aus.csv").read_text().splitlines()[1:]]
    person = [(split, group) for name, split, group in rows if name.startswith("Some-Person")]
    assert len(person) == 2 and person[0] == person[1] and person[0][1] == "person:some_person"
    assert len({group for _, _, group in rows}) == 3  # two people and one UTKFace image
    assert not any(name.startswith("5-1-0") for name, _, _ in rows)
