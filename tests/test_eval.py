"""rtanim eval: rank statistics, and a full (tiny) report on the warp model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtanim.cli.app import app
from rtanim.errors import InputError
from rtanim.expression.aus import parse_codes
from rtanim.measure.evaluate import SKIP_EVAL_EXTRA, command, rankdata, spearman


def test_rankdata_and_spearman():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: Pearson of the tie-averaged ranks [1.5,1.5,3.5,3.5,5] and [1,2.5,2.5,4,5] = 8 / sqrt(9 * 9.5)
    assert spearman([0, 0, 1, 1, 2], [0.1, 0.2, 0.2, 0.5, 0.9]) == pytest.approx(8 / math.sqrt(85.5))
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert spearman([0, 1, 2, 3], [0, np.nan, 2, 3]) == pytest.approx(1.0)  # NaN (no face found) is left out


def test_command_and_codes():
    live = {"AU12": 0.2, "AU12L": 0.1, "AU12R": 0.3, "AU26": 0.5}
    assert command(live, "AU12", 0.9) == {"AU12": 0.9, "AU12L": 0.9, "AU12R": 0.9, "AU26": 0.5}
    assert parse_codes("au12, AU26") == ("AU12", "AU26") and len(parse_codes(None)) == 17
    with pytest.raises(InputError):
        parse_codes("AU99")


@pytest.fixture(scope="module")
def basis_file(shared_data: Path, tmp_path_factory) -> str | None:
    """The shipped AU basis, or one fitted on a few shared faces when this build ships none yet."""
    from rtanim.models.geometry import AUBasis

    try:
        AUBasis.load()
        return None
    except (FileNotFoundError, OSError):
        pass
    from train.dataset import fit_dataset_basis, load_dataset
    from train.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("basis")
    sources = [shared_data / "stills", shared_data / "video" / "single_face.mp4"]
    prepare(sources, out / "ds", PrepareOptions(fps=10, test_fraction=0), progress=False)
    path = out / "basis.npz"
    fit_dataset_basis(load_dataset(out / "ds", "all")).save(path)
    return str(path)


def test_eval_warp_fills_every_section(shared_data, basis_file, tmp_path):
    out = tmp_path / "report"
    args = ["eval", "--model", "warp", "--data", str(shared_data / "video" / "single_face.mp4"), "-o", str(out),
            "--faces", "2", "--aus", "AU12,AU26", "--frames", "8"]
    if basis_file:
        args += ["--basis", basis_file]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["faces"] == 2
    for code in ("AU12", "AU26"):
        row = report["au"]["per_au"][code]
        assert row["mae"] is not None and row["spearman"] is not None and row["n"] == 8
    assert report["au"]["per_au"]["AU12"]["spearman"] > 0  # more command, more smile
    ident = report["identity"]
    assert ident["status"] == SKIP_EVAL_EXTRA or 0 <= ident["median_distance"] <= ident["max_distance"] < 0.6
    if ident["status"] == "ok":  # per commanded AU, within the overall range
        assert set(ident["median_by_au"]) == {"AU12", "AU26"}
        assert all(0 <= v <= ident["max_distance"] for v in ident["median_by_au"].values())
        edits = ident["per_edit"]  # one per output, for calib/identity_paired.py
        assert len(edits) == ident["n"] == 2 * 2 * 4 and {e["au"] for e in edits} == {"AU12", "AU26"}
    assert report["background"]["pass"] and report["background"]["changed_pixels"] == 0
    assert report["background"]["outside_pixels"] > 0
    assert report["flicker"]["status"] == "ok" and report["flicker"]["pairs"] >= 5
    md = (out / "report.md").read_text()
    for section in ("## AU fidelity", "## Identity", "## Background", "## Temporal flicker"):
        assert section in md
    assert (out / "au_grid.png").stat().st_size > 1000


def test_eval_bad_data(tmp_path):
    res = CliRunner().invoke(app, ["eval", "--model", "warp", "--data", str(tmp_path / "nope"), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_eval_bad_model_is_one_line_and_writes_nothing(tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["eval", "--model", "nope", "--data", str(data), "-o", str(out)])
    assert res.exit_code == 2
    lines = res.output.splitlines()
    assert len(lines) == 1 and "no such file or model name" in lines[0], res.output
    assert not out.exists()


def test_eval_table_marks_targets():
    from calib.eval_table import rows, table

    report = {"au": {"per_au": {"AU12": {"mae": 0.12, "spearman": 0.95}, "AU26": {"mae": 0.3, "spearman": None}}},
              "identity": {"median_distance": 0.2}, "background": {"changed_pixels": 0}, "flicker": {"flicker": 1.5}}
    r = rows(report)
    assert r["AU12 MAE"] == (0.12, True) and r["AU12 Spearman"] == (0.95, True)
    assert r["AU26 MAE"] == (0.3, False) and r["AU26 Spearman"] == (None, False)
    assert r["identity (median dlib distance)"][1] and r["background (changed px)"][1]
    assert not r["excess flicker (grey levels)"][1]
    text = table({"a": report})
    assert "| AU12 MAE | <= 0.15 | **0.120** |" in text and "| AU26 Spearman | >= 0.9 | n/a |" in text


def test_training_stills_leave_out_everyone_the_eval_reads(tmp_path):
    """The eval spreads its files over the whole sorted set, so leaving out people by their initial
    (session 9) leaked eval faces into training; calib/training_stills.py asks the eval itself."""
    from calib.training_stills import main
    from rtanim.measure.evaluate import person_of, still_files

    src = tmp_path / "faces"
    src.mkdir()
    for k in range(20):
        for j in range(1, 4):
            (src / f"Person_{chr(65 + k)}_{j:04d}.jpg").write_bytes(b"")
    (src / "facial-expressions_2868588k.jpg").write_bytes(b"")
    assert person_of(src / "George_W_Bush_0224.jpg") == "George_W_Bush" and person_of(src / "Dileep_79.jpg") == "Dileep"
    read = still_files(src, 4)[0]
    held = {person_of(f) for f in read}
    assert len(read) == 12 and len(held) >= 9  # spread: not only the first names
    assert main([str(src), str(tmp_path / "out"), "--faces", "4"]) == 0
    linked = sorted((tmp_path / "out").iterdir())
    assert linked and not {person_of(f) for f in linked} & held
    assert len(linked) == sum(person_of(f) not in held for f in src.iterdir())
    assert all(f.resolve().parent == src.resolve() for f in linked)
    assert main([str(src), str(tmp_path / "out")]) == 2  # never into a folder that exists


def _identity_report(distances: dict) -> dict:
    return {"identity": {"status": "ok", "per_edit": [{"face": f, "au": a, "level": lv, "distance": d}
                                                     for (f, a, lv), d in distances.items()]}}


def test_identity_paired_finds_a_systematic_excess_and_no_excess_for_the_same_outputs(tmp_path):
    from calib.identity_paired import compare, edits, main

    rng = np.random.default_rng(1)
    base = {(f, a, lv): float(rng.uniform(0.05, 0.2)) for f in range(6) for a in ("AU12", "AU26")
            for lv in (0.0, 0.5, 1.0)}
    same = compare(edits(_identity_report(base)), edits(_identity_report(base)), reps=200)
    assert same.median_difference == 0 and same.mean_excess == 0 and same.share_worse == 0
    worse = {k: v + (0.01 if k[1] == "AU26" else 0.0) for k, v in base.items()}
    p = compare(edits(_identity_report(worse)), edits(_identity_report(base)), reps=200)
    assert p.n == 36 and p.faces == 6
    assert p.mean_excess == pytest.approx(0.005) and p.mean_excess_ci[0] == pytest.approx(0.005)
    assert p.by_au_level["AU26"]["1"] == pytest.approx(0.01) and p.by_au_level["AU12"]["0"] == 0
    assert p.share_worse == 1.0
    for name, rep in (("a", worse), ("b", base)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(_identity_report(rep)))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--reps", "50"]) == 0


def test_identity_paired_refuses_reports_it_cannot_pair(tmp_path, capsys):
    from calib.identity_paired import main

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text(json.dumps({"identity": {"status": "ok", "median_distance": 0.1}}))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "report.json").write_text(json.dumps(_identity_report({(0, "AU12", 1.0): 0.1})))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps(_identity_report({(1, "AU12", 1.0): 0.1})))
    for args, why in (([tmp_path / "new", tmp_path / "old"], "per_edit missing"),
                      ([tmp_path / "new", tmp_path / "other"], "different edits"),
                      ([tmp_path / "new", tmp_path / "nope"], "cannot read")):
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err


def _gate_reports(tmp_path: Path, model_mouth: float, model_median: float) -> list[str]:
    row = {"mouth_psnr": 20.7, "eye_psnr": 21.8, "expression": 0.041, "AU25_err": 0.12, "AU26_err": 0.14,
           "AU45_err": 0.044, "identity": 0.248}
    better = {**row, "mouth_psnr": model_mouth, "eye_psnr": 21.82, "expression": 0.037, "AU25_err": 0.10,
              "AU26_err": 0.11, "AU45_err": 0.042, "identity": 0.245}
    (tmp_path / "re").mkdir()
    (tmp_path / "re" / "reenact.json").write_text(json.dumps({"rows": {"warp": row, "cand": better}}))
    base = {(f, a, lv): 0.1 + 0.01 * f for f in range(4) for a in ("AU25", "AU26", "AU45") for lv in (0.0, 1.0)}
    for name, mae, shift in (("w", 0.2, 0.0), ("m", 0.18, model_median - 0.115)):
        rep = _identity_report({k: v + shift for k, v in base.items()})
        rep["identity"]["median_distance"] = 0.115 + shift
        rep["au"] = {"per_au": {c: {"mae": mae} for c in ("AU25", "AU26", "AU45")}}
        rep["background"] = {"changed_pixels": 0}
        rep["flicker"] = {"flicker": -0.4}
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(rep))
    return ["cand", "--reenact", str(tmp_path / "re"), "--stills", str(tmp_path / "m"),
            "--warp-stills", str(tmp_path / "w")]


@pytest.mark.parametrize(("mouth", "median", "code", "missed"), [
    (21.8, 0.115, 0, None),  # every figure met (identity equal to warp's is "no worse")
    (21.6, 0.115, 1, "mouth PSNR"),  # +0.9 dB: under the 1 dB margin
    (21.8, 0.116, 1, "identity (stills, median)"),
])
def test_gate_check_names_each_missed_figure(tmp_path, capsys, mouth, median, code, missed):
    from calib.gate_check import main

    assert main(_gate_reports(tmp_path, mouth, median)) == code
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "gate met" if missed is None else (last.startswith("gate not met") and missed in last)


def test_gate_check_without_the_models_row_is_one_line(tmp_path, capsys):
    from calib.gate_check import main

    args = _gate_reports(tmp_path, 21.8, 0.115)
    args[0] = "other"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no row 'other'" in err[0]
