"""Training: losses, a short CPU run that learns, exact resume, a 2-process gloo DDP run, bad inputs.

Runs use the lite generator with a narrow critic (``d_width``): the original 64-wide critic's
gradient penalty alone takes seconds per step on a laptop CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rtanim.cli.app import app
from rtanim.errors import InputError
from train import losses
from train.checkpoints import training_totals
from train.config import TrainConfig, build_config
from train.prepare import PrepareOptions, prepare
from train.run_log import read_metrics
from train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["log_every=1", "sample_every=1000", "d_width=8"]


@pytest.fixture(scope="module")
def faces16(shared_data: Path, tmp_path_factory) -> Path:
    """16 UTKFace crops, all for training (their first 24 files, minus filtered faces)."""
    files = sorted((shared_data / "faces" / "utkface").glob("*.jpg"))[:24]
    src = tmp_path_factory.mktemp("utk")
    for f in files:
        (src / f.name).symlink_to(f)
    out = tmp_path_factory.mktemp("ds") / "faces16"
    result = prepare([src], out, PrepareOptions(test_fraction=0.0, limit=16), progress=False)
    assert result.total == 16
    return out


def _cfg(data: Path, out: Path, steps: int, *sets: str, flow: bool = False) -> TrainConfig:
    return build_config(data, out, arch="lite", flow=flow, steps=steps, batch=4, device="cpu",
                        sets=[*QUICK, *sets])


def test_flow_targets_match_geometry():
    from rtanim.models.geometry import AUBasis, flow_targets

    rng = np.random.default_rng(0)
    basis = AUBasis(("AU12", "AU26"), rng.normal(60, 10, (30, 2)), rng.normal(0, 2, (2, 30, 2)),
                    np.arange(0, 30, 3), np.arange(30))
    lm = rng.uniform(20, 100, (3, 30, 2))
    delta = rng.uniform(-1, 1, (3, 2))
    ref = flow_targets(lm, delta, basis)
    ctrl = basis.controls
    pts, flow = losses.flow_targets(torch.tensor(lm[:, ctrl]), torch.tensor(delta),
                                    torch.tensor(basis.basis[:, ctrl]), basis.size)
    assert np.allclose(pts.numpy(), ref.points, atol=1e-5) and np.allclose(flow.numpy(), ref.flow, atol=1e-6)
    # a flow field equal to the target everywhere has zero supervision loss
    f = flow[:, 0, :, None, None].expand(3, 2, 128, 128).float()  # constant: equal to the target at point 0
    assert losses.flow_supervision(f, pts[:, :1], flow[:, :1]).item() < 1e-6


def test_losses_basics():
    a = torch.rand(2, 1, 8, 8)
    assert losses.total_variation_sum(torch.ones(2, 1, 8, 8)).item() == 0
    assert losses.total_variation_sum(a).item() > losses.total_variation_mean(a).item() > 0
    real, fake = torch.ones(4, 1), -torch.ones(4, 1)
    lr, lf = losses.critic_wasserstein(real, fake)
    assert lr.item() == -1 and lf.item() == -1
    assert losses.au_condition(torch.zeros(5, 3), torch.ones(5, 3)).item() == pytest.approx(1 / 5)

    class Linear(torch.nn.Module):  # D(x) = sum(x) / sqrt(n): gradient norm exactly 1, penalty 0
        def forward(self, x):
            return (x.flatten(1).sum(1, keepdim=True) / x[0].numel() ** 0.5, None)

    gp = losses.gradient_penalty(Linear(), torch.rand(3, 3, 4, 4), torch.rand(3, 3, 4, 4), torch.rand(3, 1, 1, 1))
    assert gp.item() < 1e-10


def test_short_run_learns_and_checkpoint_runs_in_engines(faces16, tmp_path):
    from engines.cache import EngineCache
    from engines.select import select_engine

    run = tmp_path / "run"
    result = train(_cfg(faces16, run, 20, "seed=3"), progress=False)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 21))
    # The critic's objective (dominated by its AU regression on real faces) falls by about half in
    # 20 steps; the generator's, a moving target while the critic learns, is too noisy to test here.
    d = [r["d_loss"] for r in rows]
    err = [r["au_err_real"] for r in rows]
    assert np.mean(d[-5:]) < 0.8 * np.mean(d[:5]) and np.mean(err[-5:]) < np.mean(err[:5])
    assert next(r["step"] for r in rows if "g_loss" in r) == 5  # G trains every 5th step
    cfg = json.loads((run / "config.json").read_text())
    for key in ("lambda_D_cond", "lambda_cyc", "lambda_mask", "lambda_mask_smooth", "lambda_D_gp", "n_critic",
                "betas", "seed", "steps"):
        assert key in cfg
    assert cfg["lambda_D_cond"] == 4000 and cfg["lambda_cyc"] == 10 and cfg["lambda_D_gp"] == 10
    assert result.checkpoint.is_file() and (run / "generator.safetensors").is_file()
    assert list((run / "samples").glob("*.png"))
    crops = np.random.default_rng(0).integers(0, 255, (2, 128, 128, 3), dtype=np.uint8)
    aus = np.full((2, 17), 0.5, np.float32)
    outs = []
    for kind in ("torch", "onnxruntime"):
        engine = select_engine(kind, str(result.checkpoint), device="cpu", cache=EngineCache(tmp_path / "cache"))
        o = engine.run(crops, aus)
        assert o.attention.shape == (2, 1, 128, 128) and np.isfinite(o.color).all()
        outs.append(o)
    assert np.allclose(outs[0].attention, outs[1].attention, atol=1e-3)


def test_resume_is_exact(faces16, tmp_path):
    """A flow model (covers flow supervision and the AU basis) stopped at step 2 and resumed
    matches an uninterrupted run step for step, weights included."""
    sets = ("ckpt_every=2", "n_critic=2", "batch=2")
    full, part = tmp_path / "full", tmp_path / "part"
    train(_cfg(faces16, full, 4, *sets, flow=True), progress=False)
    train(_cfg(faces16, part, 4, *sets, flow=True), progress=False, stop_after=2)
    assert json.loads((part / "latest.json").read_text())["step"] == 2
    train(build_config(None, part, resume=True), resume=True, progress=False)
    a, b = read_metrics(full), read_metrics(part)
    for r in a + b:
        r.pop("images_per_s")
    assert a == b and any("g_flow" in r for r in a)
    sa = torch.load(full / "checkpoints" / "state_0000004.pt", weights_only=True)
    sb = torch.load(part / "checkpoints" / "state_0000004.pt", weights_only=True)
    for net in ("G", "D"):
        assert all(torch.equal(sa[net][k], sb[net][k]) for k in sa[net])
    ga, gb = load_file(full / "generator.safetensors"), load_file(part / "generator.safetensors")
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


def test_flow_pretraining_then_gan_from_its_weights(faces16, tmp_path):
    """The critic-free flow stage trains the flow head (it starts at zero) and pushes A towards 1; a GAN
    run started from its weights (init) begins exactly there, and the totals add up across the runs."""
    pre = tmp_path / "pre"
    train(_cfg(faces16, pre, 30, "stage=flow", "lr_g=1e-3", flow=True), progress=False)
    rows = read_metrics(pre)
    assert all("d_real" not in r for r in rows)  # no critic in this stage
    keep, color = [r["g_keep"] for r in rows], [r["g_color"] for r in rows]
    assert np.mean(keep[-5:]) < 0.8 * np.mean(keep[:5]) and np.mean(color[-5:]) < np.mean(color[:5])
    assert all(np.isfinite(r["g_flow"]) for r in rows)
    assert load_file(pre / "generator.safetensors")["flow_reg.0.weight"].abs().max() > 0
    assert training_totals(pre / "generator.safetensors") == {"flow": {"steps": 30, "images": 120}}

    gan = tmp_path / "gan"
    train(_cfg(faces16, gan, 5, f"init={pre / 'generator.safetensors'}", flow=True), progress=False,
          stop_after=0)  # builds the run, trains nothing: the saved generator is the init
    trainer_start = load_file(gan / "generator.safetensors")
    pre_w = load_file(pre / "generator.safetensors")
    assert all(torch.equal(trainer_start[k], pre_w[k]) for k in pre_w)
    train(build_config(None, gan, steps=5, resume=True), resume=True, progress=False)
    assert training_totals(gan / "generator.safetensors") == {"flow": {"steps": 30, "images": 120},
                                                              "gan": {"steps": 5, "images": 20}}
    with pytest.raises(InputError, match="this run trains a lite"):  # a lite+flow init for a plain lite run
        train(_cfg(faces16, tmp_path / "bad", 2, f"init={pre / 'generator.safetensors'}"), progress=False)
    with pytest.raises(InputError, match="add --flow"):
        _cfg(faces16, tmp_path / "bad2", 2, "stage=flow")


def test_ddp_gloo_two_processes(faces16, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
           "--data", str(faces16), "--out", str(run), "--arch", "lite", "--steps", "4", "--batch", "2",
           "--device", "cpu", "--set", "d_width=8", "--set", "n_critic=2", "--set", "log_every=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((run / "checkpoints").glob("generator_*.safetensors"))) == 1
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_bad_inputs(faces16, tmp_path):
    with pytest.raises(InputError, match="no such dataset"):
        train(_cfg(tmp_path / "missing", tmp_path / "r1", 2), progress=False)
    empty = tmp_path / "empty"
    prepare([faces16 / "imgs" / sorted(os.listdir(faces16 / "imgs"))[0]], empty,
            PrepareOptions(min_face=10_000), progress=False)  # the face is filtered out: no images
    with pytest.raises(InputError, match="no training images"):
        train(_cfg(empty, tmp_path / "r2", 2), progress=False)
    gan = tmp_path / "gan"  # an original GANimation layout has bilateral AUs only
    gan.mkdir()
    for name in ("aus_openface.pkl", "train_ids.csv", "test_ids.csv"):
        (gan / name).write_bytes((faces16 / name).read_bytes())
    (gan / "imgs").symlink_to(faces16 / "imgs")
    with pytest.raises(InputError, match="one-sided"):
        train(_cfg(gan, tmp_path / "r3", 2, "au_set=extended"), progress=False)
    with pytest.raises(InputError, match="unknown setting"):
        _cfg(faces16, tmp_path / "r4", 2, "lambda_cycle=3")
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r5")])
    assert res.exit_code == 2 and "no such dataset" in res.output and "Traceback" not in res.output


def test_training_and_export_need_no_video_or_tracking_libraries(tmp_path):
    """GPU training machines have no PyAV or MediaPipe (calib/train_device.sh): training and export import
    without them."""
    for name in ("av", "mediapipe", "pyvirtualcam"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    blocked = subprocess.run([sys.executable, "-c", "import rtanim.io.source_file"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert blocked.returncode != 0 and "blocked for this test" in blocked.stderr  # the blocker works
    code = "import train.__main__, train.trainer, train.default_data; from rtanim.cli.app import app; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_device_training_script_end_to_end(faces16, tmp_path):
    """calib/train_device.sh with tiny time budgets on the CPU, without PyAV or MediaPipe: both models get a
    flow pretraining run, then an adversarial run from it, and come back as FP16 pieces that join into
    checkpoints carrying both stages' totals, with the logs archived."""
    from rtanim.models.ganimation import load_checkpoint

    for name in ("av", "mediapipe", "pyvirtualcam"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('not on the device')\n")
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = dict(os.environ, OUT=str(out), RUNS=str(runs), DATA=str(faces16), GAN_S="60", FLOW_S="30", BATCH="2",
               PYTHONPATH=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(ROOT / "calib" / "train_device.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "runs.tar.gz").stat().st_size > 0
    for name in ("lite+flow", "ganimation+flow"):
        pieces = sorted(out.glob(f"{name}.safetensors.part*"))
        assert pieces and all(p.stat().st_size <= 15 * 2**20 for p in pieces)
        joined = tmp_path / f"{name}.safetensors"
        joined.write_bytes(b"".join(p.read_bytes() for p in pieces))
        ckpt = load_checkpoint(joined)
        assert ckpt.spec.name == name and all(t.dtype == torch.float16 for t in ckpt.state.values())
        totals = json.loads(ckpt.extra["training"])
        assert totals["flow"]["steps"] >= 1 and totals["gan"]["steps"] >= 1, totals
