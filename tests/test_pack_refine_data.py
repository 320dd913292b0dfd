"""calib/pack_refine_data.py: the training frames that travel to a GPU machine."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "calib"))

import pack_refine_data  # noqa: E402

from train.refine_data import load_frames  # noqa: E402


def test_packed_frames_load_as_the_trainer_reads_them(clip_frames, tmp_path):
    out = tmp_path / "pack.tar"
    assert pack_refine_data.main(["--data", str(clip_frames), "-o", str(out), "--max-mb", "0.1", "--held-out", "0"]) == 0
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    summary = json.loads((tmp_path / "x" / "pack.json").read_text())
    full = load_frames([clip_frames])
    packed = load_frames([tmp_path / "x"])
    assert 0 < summary["packed"] == len(packed) < len(full)  # the budget held it to a share
    assert out.stat().st_size <= 0.1 * 2**20
    rows = {n: i for i, n in enumerate(full.names)}
    for k, name in enumerate(packed.names):  # the same frame: its AUs, landmarks (to float16) and crop
        i = rows[name]
        assert np.allclose(packed.aus[k], full.aus[i], atol=1e-4)
        assert np.abs(packed.landmarks[k] - full.landmarks[i]).max() < 0.07
        assert np.abs(packed.images[k].astype(int) - full.images[i]).mean() < 6  # JPEG quality 85


def test_held_out_people_stay_behind_and_bad_input_is_one_line(clip_frames, tmp_path, capsys):
    out = tmp_path / "pack.tar"
    # one clip, one person: holding any out leaves nothing to pack
    assert pack_refine_data.main(["--data", str(clip_frames), "-o", str(out), "--held-out", "0.5"]) == 2
    assert "no training frames left" in capsys.readouterr().err and not out.exists()
    assert pack_refine_data.main(["--data", str(clip_frames), "-o", str(out), "--held-out", "0", "--max-mb", "0.02"]) == 2
    assert "not one frame fits" in capsys.readouterr().err and not out.exists()
    assert pack_refine_data.main(["--data", str(tmp_path / "missing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and not out.exists()
