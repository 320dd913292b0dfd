"""The GANimation training loop: one process, or one per device under ``torchrun`` (DDP).

A step is one batch: a critic update, and every ``n_critic``-th step a generator update on the
same batch (the original's ``train_G_every_n_iterations``); in the ``flow`` stage (pretraining,
no critic) a generator update on geometry targets alone. ``init`` starts from existing weights
(the shipped ones, so each GPU session continues the last), and every checkpoint records the
model's training totals across runs. Everything random in a step (batch
order, target AUs, flips, the gradient-penalty mix) comes from seeded generators whose states are
checkpointed, and the data sits in one in-memory tensor, so ``--resume`` continues bit for bit.

Data parallelism averages gradients with one explicit all-reduce per update (:mod:`train.distributed`
says why not DDP); the data split uses DistributedSampler, and only rank 0 writes files
(:mod:`train.checkpoints`, :mod:`train.run_log`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from rtanim.errors import InputError, RunError
from rtanim.expression.aus import AU_CODES, EXTENDED_CODES
from rtanim.face.align import CROP_SIZE
from rtanim.models.ganimation import Discriminator, Generator, blend, spec_for, warp
from train import checkpoints, losses
from train.config import TrainConfig
from train.dataset import check_landmarks, code_matrix, fit_dataset_basis, flip_permutation, load_dataset
from train.distributed import (
    allreduce_mean,
    broadcast_state,
    dist_env,
    init_process_group,
    leave_process_group,
    pick_device,
)
from train.run_log import MetricLog, image_grid, progress_bar

# ----------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of the generator's weights (what gets exported).

    The decay ramps up as (1 + n) / (10 + n) so a short run's average is not dominated by the
    random initialisation.
    """

    def __init__(self, model: Generator, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: Generator) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach().to(e.dtype), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)


# ----------------------------------------------------------------------------- trainer


@dataclass
class FitResult:
    step: int
    images_per_s: float
    seconds: float
    checkpoint: Path | None


class Trainer:
    """Builds models, data and optimisers from a :class:`TrainConfig`; :meth:`fit` runs the loop."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = False) -> None:
        self.cfg = cfg.validate()
        self.env = dist_env()
        self.run = Path(cfg.out)
        self.progress = progress and self.env.main
        init_process_group(self.env, self.cfg.device)
        self.device = pick_device(cfg.device, self.env)
        if self.device.type == "cpu":
            threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get(
                "LOCAL_WORLD_SIZE", self.env.world))))
            torch.set_num_threads(threads)
        if self.device.type == "cuda":  # fixed 128x128 shapes: let cuDNN pick its fastest convolutions once
            torch.backends.cudnn.benchmark = True
        self.amp = cfg.amp and self.device.type == "cuda"
        self.memory_format = torch.channels_last if cfg.channels_last and self.device.type == "cuda" \
            else torch.contiguous_format
        self.codes = AU_CODES if cfg.au_set == "ganimation" else EXTENDED_CODES

        self.data = load_dataset(cfg.data, "train")
        if len(self.data) == 0:
            raise InputError(cfg.data, "the dataset has no training images", field="--data")
        self.sampler = DistributedSampler(range(len(self.data)), num_replicas=self.env.world, rank=self.env.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // cfg.batch
        if self.steps_per_epoch < 1:
            raise InputError(cfg.data, f"{len(self.data)} training images are fewer than batch {cfg.batch} x "
                                       f"{self.env.world} process(es); lower --batch", field="--batch")
        self.src_aus = torch.from_numpy(self.data.vectors(self.codes))  # raises on an AU mismatch
        self.flip_perm = torch.from_numpy(flip_permutation(self.codes))

        spec = spec_for(cfg.arch, flow=cfg.flow, au_codes=self.codes)
        if cfg.width > 0 or cfg.n_res >= 0:
            spec = replace(spec, arch="custom", width=cfg.width or spec.width,
                           n_res=cfg.n_res if cfg.n_res >= 0 else spec.n_res)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.G = Generator(spec).train()
        self.history = checkpoints.load_init(cfg.init, cfg.model_name, self.G) if not resume else {}
        self.D = Discriminator(len(self.codes), CROP_SIZE, cfg.d_width, cfg.d_depth)
        self.G.to(self.device, memory_format=self.memory_format)
        self.D.to(self.device, memory_format=self.memory_format)
        broadcast_state(self.G, self.env.world)
        broadcast_state(self.D, self.env.world)
        self.ema = EMA(self.G, cfg.ema_decay)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.env.rank)
        self.images = self.data.images.to(self.device) if self.device.type == "cuda" else self.data.images
        self.src_aus = self.src_aus.to(self.device)
        self.flip_perm = self.flip_perm.to(self.device)
        self.resuming = resume
        if not resume and self.env.main:
            self._start_run()
        self.flow = self._flow_setup() if cfg.flow else None
        self.step = 0
        self.g_stats: dict[str, float] = {}  # the last generator update's losses, logged until the next one
        if resume:
            checkpoints.resume(self)
        self.metrics = MetricLog(self.run, self.env.main)
        self.samples = self._sample_batch()

    # ------------------------------------------------------------------ setup

    def _start_run(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        if (self.run / "latest.json").exists():
            raise InputError(self.run, "already holds a run; pass --resume to continue it or choose another --out")
        (self.run / "metrics.jsonl").unlink(missing_ok=True)
        self.cfg.save(self.run / "config.json")

    def _flow_setup(self) -> dict[str, torch.Tensor]:
        """Control landmarks (plain and mirrored), the AU basis at those controls and the code map."""
        basis = self._basis()
        lm = check_landmarks(self.data)
        ctrl = basis.controls
        mirrored = lm[:, basis.mirror[ctrl]].copy()
        mirrored[..., 0] = (CROP_SIZE - 1) - mirrored[..., 0]
        to_basis = code_matrix(self.codes, basis.codes)  # model codes -> basis codes
        t = {"lm": lm[:, ctrl], "lm_flip": mirrored, "basis": basis.basis[:, ctrl].astype(np.float32),
             "to_basis": to_basis}
        return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(self.device) for k, v in t.items()}

    def _basis(self):
        """The AU basis for flow supervision: the run's own copy when resuming, else per ``cfg.basis``."""
        from rtanim.models.geometry import AUBasis

        saved = self.run / "basis.npz"
        if self.resuming and saved.is_file():
            return AUBasis.load(saved)
        choice = self.cfg.basis
        basis = None
        if choice in ("auto", "shipped"):
            try:
                basis = AUBasis.load()
            except (FileNotFoundError, OSError):
                if choice == "shipped":
                    raise InputError("rtanim/assets/au_basis.npz", "no AU basis shipped; run calib/fit_geometry.py "
                                                                   "or train with --set basis=fit") from None
        elif choice != "fit":
            basis = AUBasis.load(choice) if Path(choice).is_file() else None
            if basis is None:
                raise InputError(choice, "no such AU basis file", field="basis")
        if basis is None:
            basis = fit_dataset_basis(self.data)
        if self.env.main:
            self.run.mkdir(parents=True, exist_ok=True)
            basis.save(saved)
        return basis

    def _sample_batch(self) -> dict[str, torch.Tensor]:
        """A fixed batch for image grids: held-out faces when there are some, with fixed targets."""
        try:
            held = load_dataset(self.cfg.data, "test", limit=6)
        except InputError:
            held = None
        data = held if held is not None and len(held) else self.data
        n = min(6, len(data))
        g = torch.Generator().manual_seed(1234)
        targets = self.src_aus[torch.randint(0, len(self.data), (n,), generator=g).to(self.device)]
        return {"image": data.images[:n].to(self.device).float() / 127.5 - 1.0, "aus": targets}

    # ------------------------------------------------------------------ one step

    def lr_factor(self, step: int) -> float:
        """1 until ``decay_start`` of the run, then linearly to 0 at the last step (the original's schedule)."""
        start = int(self.cfg.decay_start * self.cfg.steps)
        if step < start or self.cfg.steps <= start:
            return 1.0
        return max(0.0, (self.cfg.steps - step) / (self.cfg.steps - start))

    def _indices(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.steps_per_epoch)
        self.sampler.set_epoch(epoch)
        order = list(self.sampler)
        b = self.cfg.batch
        return torch.tensor(order[offset * b:(offset + 1) * b], dtype=torch.long)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """Images, source / target AUs and (flow) landmark targets for ``step``; consumes the RNG identically
        whatever the settings, so runs that differ only in a weight see the same batches."""
        cfg, dev = self.cfg, self.device
        idx = self._indices(step)
        n, k = len(idx), len(self.codes)
        other = torch.randint(0, len(self.data), (n,), generator=self.rng)
        noise = (torch.rand(n, k, generator=self.rng) * 2 - 1) * cfg.target_noise
        flip = (torch.rand(n, generator=self.rng) < 0.5) & cfg.flip
        alpha = torch.rand(n, 1, 1, 1, generator=self.rng)
        idx_d, flip_d = idx.to(dev), flip.to(dev)
        real = self.images[idx_d].to(dev, non_blocking=True).float() / 127.5 - 1.0
        real = torch.where(flip_d[:, None, None, None], real.flip(-1), real)
        src = self.src_aus[idx_d]
        src = torch.where(flip_d[:, None], src[:, self.flip_perm], src)
        tgt = self.src_aus[other.to(dev)] + noise.to(dev)
        if cfg.clip_targets:
            tgt = tgt.clamp(0.0, 1.0)
        out = {"real": real.contiguous(memory_format=self.memory_format), "src": src, "tgt": tgt,
               "alpha": alpha.to(dev)}
        if self.flow is not None:
            lm = torch.where(flip_d[:, None, None], self.flow["lm_flip"][idx_d], self.flow["lm"][idx_d])
            delta = (tgt - src) @ self.flow["to_basis"].T
            out["points"], out["flow"] = losses.flow_targets(lm, delta, self.flow["basis"], CROP_SIZE)
            moved = lm + torch.einsum("nk,kpc->npc", delta, self.flow["basis"])
            out["points_back"], out["flow_back"] = losses.flow_targets(moved, -delta, self.flow["basis"], CROP_SIZE)
        return out

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def critic_step(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        with self._autocast():
            with torch.no_grad():
                fake = blend(b["real"], *self.G(b["real"], b["tgt"]))
            d_real, au_real = self.D(b["real"])
            d_fake, _ = self.D(fake)
            l_real, l_fake = losses.critic_wasserstein(d_real, d_fake)
            l_cond = losses.au_condition(au_real, b["src"])
            gp = losses.gradient_penalty(self.D, b["real"], fake, b["alpha"])
        loss = cfg.lambda_D_prob * (l_real + l_fake) + cfg.lambda_D_cond * l_cond + cfg.lambda_D_gp * gp
        self.opt_D.zero_grad(set_to_none=True)
        loss.backward()
        allreduce_mean(self.D, self.env.world)
        self.opt_D.step()
        return {"d_loss": loss.item(), "d_real": l_real.item(), "d_fake": l_fake.item(), "d_cond": l_cond.item(),
                "d_gp": gp.item(), "au_err_real": (au_real.float() - b["src"]).abs().mean().item()}

    def generator_step(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        self.D.requires_grad_(False)
        try:
            with self._autocast():
                out = self.G(b["real"], b["tgt"])
                fake = blend(b["real"], *out)
                d_fake, au_fake = self.D(fake)
                back = self.G(fake, b["src"])
                rec = blend(fake, *back)
                adv = losses.generator_adversarial(d_fake)
                cond = losses.au_condition(au_fake, b["tgt"])
                cyc = losses.cycle(rec, b["real"])
                mask = losses.attention_mean(out[0]) + losses.attention_mean(back[0])
                smooth = losses.total_variation_sum(out[0]) + losses.total_variation_sum(back[0])
                loss = (cfg.lambda_D_prob * adv + cfg.lambda_D_cond * cond + cfg.lambda_cyc * cyc
                        + cfg.lambda_mask * mask + cfg.lambda_mask_smooth * smooth)
                stats = {"g_adv": adv.item(), "g_cond": cond.item(), "g_cyc": cyc.item(), "g_mask": mask.item(),
                         "g_mask_smooth": smooth.item(), "au_err_fake": (au_fake.float() - b["tgt"]).abs().mean().item()}
                if self.flow is not None:
                    fl = losses.flow_supervision(out[2], b["points"], b["flow"]) + \
                        losses.flow_supervision(back[2], b["points_back"], b["flow_back"])
                    fs = losses.total_variation_mean(out[2]) + losses.total_variation_mean(back[2])
                    loss = loss + cfg.lambda_flow * fl + cfg.lambda_flow_smooth * fs
                    stats |= {"g_flow": fl.item(), "g_flow_smooth": fs.item()}
            self._update_generator(loss)
        finally:
            self.D.requires_grad_(True)
        stats["g_loss"] = loss.item()
        return stats

    def flow_step(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """Geometry pretraining: F at the landmarks matches the AU basis, A -> 1, C -> the warped input."""
        cfg = self.cfg
        with self._autocast():
            attention, color, flow = self.G(b["real"], b["tgt"])
            fl = losses.flow_supervision(flow, b["points"], b["flow"])
            fs = losses.total_variation_mean(flow)
            keep = (1.0 - attention.float()).mean()
            col = losses.cycle(color, warp(b["real"], flow.detach().to(b["real"].dtype)))
            loss = cfg.lambda_flow * fl + cfg.lambda_flow_smooth * fs + cfg.lambda_keep * keep + cfg.lambda_color * col
        self._update_generator(loss)
        return {"g_flow": fl.item(), "g_flow_smooth": fs.item(), "g_keep": keep.item(), "g_color": col.item(),
                "g_loss": loss.item()}

    def _update_generator(self, loss: torch.Tensor) -> None:
        """One optimiser step of G on ``loss`` (gradients averaged across processes), then the EMA."""
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        allreduce_mean(self.G, self.env.world)
        self.opt_G.step()
        self.ema.update(self.G)

    def train_step(self) -> dict[str, float]:
        """One batch: a critic update, plus a generator update every ``n_critic`` steps (or, in the flow
        stage, one generator update); advances ``step``."""
        factor = self.lr_factor(self.step)
        for group in self.opt_G.param_groups:
            group["lr"] = self.cfg.lr_g * factor
        for group in self.opt_D.param_groups:
            group["lr"] = self.cfg.lr_d * factor
        b = self.batch(self.step)
        if self.cfg.stage == "flow":
            stats = self.flow_step(b)
        else:
            stats = self.critic_step(b)
            if (self.step + 1) % self.cfg.n_critic == 0:
                stats |= self.generator_step(b)
        self.step += 1
        stats["lr"] = self.cfg.lr_g * factor
        return stats

    # ------------------------------------------------------------------ loop

    @torch.no_grad()
    def write_samples(self) -> None:
        if not self.env.main:
            return
        model = self.ema.model
        image, aus = self.samples["image"], self.samples["aus"]
        out = model(image, aus)
        grid = image_grid([image, blend(image, *out), out[0], out[1]])
        d = self.run / "samples"
        d.mkdir(exist_ok=True)
        import cv2

        cv2.imwrite(str(d / f"step_{self.step:07d}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        self.metrics.image(self.step, "samples/real_fake_attention_color", grid)

    def fit(self, stop_after: int | None = None, on_step: Callable[[int, dict], None] | None = None) -> FitResult:
        """Train to ``cfg.steps`` (or ``stop_after`` more steps, for tests); checkpoint every ``ckpt_every``
        and at the end. Ctrl-C saves a checkpoint of the last finished step before it propagates."""
        cfg = self.cfg
        end = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        first, t0 = self.step, time.perf_counter()
        last_ckpt: Path | None = None
        saved_at = -1  # same on every rank: save() is a collective under DDP
        bar = progress_bar(self.progress, end, self.step)
        g_stats = self.g_stats
        try:
            while self.step < end:
                stats = self.train_step()
                if any(k.startswith("g_") for k in stats):
                    g_stats = self.g_stats = {k: v for k, v in stats.items() if k.startswith(("g_", "au_err_fake"))}
                if self.step % cfg.log_every == 0 or self.step == end:
                    rate = (self.step - first) * cfg.batch * self.env.world / max(1e-9, time.perf_counter() - t0)
                    self.metrics.scalars(self.step, {**g_stats, **stats, "images_per_s": rate})
                if on_step is not None:
                    on_step(self.step, stats)
                if bar is not None:
                    loss = f"d {stats['d_loss']:.3g}" if "d_loss" in stats else f"g {stats['g_loss']:.3g}"
                    bar[0].update(bar[1], completed=self.step, description=loss)
                if self.step % cfg.sample_every == 0:
                    self.write_samples()
                if self.step % cfg.ckpt_every == 0:
                    last_ckpt, saved_at = checkpoints.save(self) or last_ckpt, self.step
            seconds = time.perf_counter() - t0
            if saved_at != self.step:
                last_ckpt = checkpoints.save(self) or last_ckpt
            if self.step % cfg.sample_every:
                self.write_samples()
        except KeyboardInterrupt:
            if self.step > first and saved_at != self.step:
                checkpoints.save(self)
            raise
        finally:
            if bar is not None:
                bar[0].stop()
            self.metrics.close()
        done = self.step - first
        rate = done * cfg.batch * self.env.world / seconds if seconds > 0 else 0.0
        return FitResult(self.step, rate, seconds, last_ckpt)

    def close(self) -> None:
        leave_process_group(self.env)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> FitResult:
    """Run (or continue) a training run; what ``rtanim train`` and ``python -m train`` call."""
    trainer = Trainer(cfg, resume=resume, progress=progress)
    try:
        return trainer.fit(stop_after=stop_after)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
        if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e):
            raise RunError(f"out of memory at step {trainer.step}: lower --batch ({e})") from None
        raise
    finally:
        trainer.close()
