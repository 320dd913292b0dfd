"""Supervised training of the ``refine`` model on the CPU, resumable across sessions.

    python -m train.refine_train --data .data/talk_a .data/talk_b --run runs/refine --minutes 150

Pairs come from :mod:`train.refine_data` (drawn fresh every step in one loader process), the
loss is the composite's weighted L1 plus image gradients (x5 around mouth and eyes) plus a small
attention prior, and the run writes, atomically, every ``--save-every`` seconds and when stopped
(Ctrl-C, SIGTERM, or the time budget):

- ``RUN/state.safetensors``: FP32 weights and Adam moments (resume within and across sessions);
- ``RUN/refine.safetensors``: FP16 weights with the training totals (what ships and what the
  next session starts from with ``--init``); with ``--ema DECAY`` these are the exponential moving
  average of the weights (judge those: checkpoints of one run minutes apart differ by 0.25 dB of
  mouth PSNR, session 9), and ``RUN/refine_raw.safetensors`` holds the last step's own;
- ``RUN/metrics.jsonl``, TensorBoard events, ``RUN/samples/*.png`` (input | output | target | A);
- with ``--adv``, ``RUN/critic.safetensors``: the patch critic of the adversarial stage
  (:mod:`train.refine_adv`), a refinement on top of the converged L1 base; ``--r1``, ``--diffaug``
  and ``--feat-match`` regularise it (R1 penalty, DiffAugment, critic feature matching), and
  ``--l1-weight`` lowers the L1 terms to an anchor under it.

``--teacher CHECKPOINT`` distils another refine checkpoint as it runs (typically the same weights
with the mirror average, which costs two passes a face): its composite of each pair is a second
target, so the student, run once, learns what the teacher computes twice.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rtanim.errors import InputError
from rtanim.face.compose import feather_mask
from rtanim.models.reference import REFERENCE_CHANNELS, reference_channels
from rtanim.models.refine import (
    BASES,
    RefineNet,
    RefineSpec,
    add_paint_options,
    load_basis,
    load_refine,
    paint_option_problem,
    paint_settings,
    save_refine,
)
from train.distributed import DistEnv, pick_device
from train.refine_adv import DIFFAUG_DEFAULT, DIFFAUG_OPS, R1_EVERY, parse_policy
from train.refine_data import HELD_OUT, Frames, Pair, PairMaker, PairMix, load_frames, mix_report, split_people
from train.refine_grow import with_flow_head, with_reference, with_res_blocks, with_widths
from train.refine_losses import W_ATT_FOCUS, losses, teacher_composite, teacher_mismatch
from train.refine_prune import narrowed
from train.refine_state import (
    empty_totals,
    load_state,
    make_ema,
    record_setting,
    respecified,
    restore_ema,
    sample_grid,
    save_state,
)
from train.state_io import carry_adam, move_optimizer_state

#: The adversarial weight (--adv) ramps in over the critic's first steps: a fresh critic's
#: gradients say nothing yet about what real mouths look like.
ADV_RAMP_STEPS = 500


def to_batch(pairs: list[Pair], reference: bool = False) -> dict[str, torch.Tensor]:
    """Pairs as tensors; with ``reference`` also the reference channels (zeros where a pair has none)."""
    def img(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    batch = {
        "warped": img([p.warped for p in pairs]),
        "target": img([p.target for p in pairs]),
        "geometry": torch.from_numpy(np.stack([p.geometry for p in pairs])),
        "aus": torch.from_numpy(np.stack([p.aus for p in pairs]).astype(np.float32)),
        "weight": torch.from_numpy(np.stack([p.weight for p in pairs]))[:, None],
    }
    if all(p.boxes is not None for p in pairs):
        batch["boxes"] = torch.from_numpy(np.stack([p.boxes for p in pairs]))
    if reference:
        batch["reference"] = torch.from_numpy(np.stack([reference_channels(p.reference, p.weight.shape[0])
                                                        for p in pairs]))
    if any(p.flow is not None for p in pairs):  # only a flow head's training asks for them (PairMix)
        batch["flow"] = torch.from_numpy(np.stack([np.zeros((2, *p.weight.shape), np.float32) if p.flow is None
                                                   else p.flow for p in pairs]))
    return batch


class PairStream(torch.utils.data.IterableDataset):
    """Endless batches of fresh pairs; each loader worker draws with its own seed."""

    def __init__(self, frames: Frames, batch: int, mix: PairMix, seed: int, basis: str = "") -> None:
        self.frames, self.batch, self.mix, self.seed, self.basis = frames, batch, mix, seed, basis

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        maker = PairMaker(self.frames, basis=load_basis(self.basis), mix=self.mix,
                          seed=self.seed * 1000 + (info.id if info else 0))
        while True:
            yield to_batch([maker() for _ in range(self.batch)], reference=self.mix.reference > 0)


def _loader_worker_init(_worker_id: int) -> None:
    """Loader workers leave Ctrl-C and SIGTERM to the trainer, which stops, saves and then shuts them
    down (a terminal's Ctrl-C and ``pkill`` reach the workers too; one that dies of it first makes
    the loader raise before the trainer could save)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ----------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.refine_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="rtanim prepare folders (video frames and stills)")
    p.add_argument("--run", type=Path, required=True, help="run folder (resumes when it holds state.safetensors)")
    p.add_argument("--init", type=Path, default=None, help="start from these refine weights (FP16 ok)")
    p.add_argument("--minutes", type=float, default=60.0, help="time budget of this run")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps of this run (0: time only)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-end", type=float, default=0.0,
                   help="anneal the learning rate geometrically to this over the time budget (0: keep --lr); "
                        "tried once to settle a session's last weights, it hurt identity (MODELS.md)")
    p.add_argument("--held-out", type=float, default=HELD_OUT, help="fraction of open-mouth frames held out, whole people")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=float, default=300.0, help="seconds between checkpoints")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--device", default="cpu",
                   help="where the net trains: cpu, or cuda on a GPU machine (pairs are still made by the CPU "
                        "loader workers: give it --workers, one per spare core)")
    p.add_argument("--limit", type=int, default=0, help="load at most this many frames (tests)")
    p.add_argument("--widths", type=int, nargs=3, default=None,
                   help=f"layer widths at S/2, S/4, S/8 (default {' '.join(map(str, RefineSpec.widths))}); with --init or "
                        "on resume: widen the net to these (the wider net starts as the trained one, train.refine_grow) "
                        "or narrow it (its most used channels kept, train.refine_prune; give it --teacher)")
    p.add_argument("--basis-warp", type=float, default=PairMix.basis_warp,
                   help="share of video pairs warped by the AU basis as at run time (the rest: to the real landmarks)")
    p.add_argument("--basis", choices=sorted(BASES), default=None,
                   help="the AU basis the net paints over, from here on: shipped (warp's) or regional (each AU moves "
                        "only its part of the face: calib/regional_basis.py); default: the net's")
    p.add_argument("--n-res", type=int, default=0,
                   help="grow the bottleneck to this many residual blocks (new ones start as the identity; "
                        "0: keep the net's)")
    p.add_argument("--reference", type=float, default=None, metavar="SHARE",
                   help="show this share of pairs a remembered open mouth of the same clip (rtanim.models.reference); adds "
                        "the reference input (zero at first) if the net lacks it; default: 0.75 for a net that has it")
    p.add_argument("--flow", action="store_true", help="add a residual flow head (zero at first) if the net lacks one")
    p.add_argument("--adv", type=float, default=0.0,
                   help="weight of the patch critic's hinge loss on mouth and eyes (0: L1 only), on a converged "
                        "base; 0.05 sharpened teeth but cost mouth PSNR (MODELS.md)")
    p.add_argument("--adv-lr", type=float, default=2e-4, help="the critic's learning rate")
    p.add_argument("--r1", type=float, default=0.0, metavar="GAMMA",
                   help="with --adv: R1 gradient penalty on real crops, (GAMMA/2) E|grad D|^2 over the mouth and eye "
                        "patches, every 4 critic steps (0: off), e.g. 1")
    p.add_argument("--diffaug", nargs="?", const=DIFFAUG_DEFAULT, default="", metavar="POLICY",
                   help="with --adv: DiffAugment what the critic sees, real and painted alike (bare: "
                        f"{DIFFAUG_DEFAULT}; a comma-separated subset of {', '.join(DIFFAUG_OPS)}), for small data")
    p.add_argument("--feat-match", type=float, default=0.0, metavar="WEIGHT",
                   help="with --adv: weight of critic feature matching for the net, L1 between the critic's hidden "
                        "activations on target and composite over mouth and eyes (0: off), e.g. 1")
    p.add_argument("--l1-weight", type=float, default=1.0, metavar="WEIGHT",
                   help="scale of the composite's L1 and gradient L1 (default 1), e.g. 0.5: an anchor under --adv")
    p.add_argument("--l2", type=float, default=0.0,
                   help="weight of a squared-error term beside the L1 (0: L1 only), e.g. 10 on a converged base: "
                        "the mean of the plausible mouths, which PSNR rewards, instead of their median")
    p.add_argument("--mirror", type=float, default=0.0, metavar="SHARE",
                   help="share of pairs mirrored left-right, sided AUs swapped (0: none), e.g. 0.5")
    p.add_argument("--closing", type=float, default=0.0, metavar="SHARE",
                   help="share of video pairs with a closed-mouthed target that prefer an open-mouthed source "
                        "(0: no preference), e.g. 0.5: the net learns to close mouths, not only to open them")
    p.add_argument("--carry", type=float, default=0.0, metavar="SHARE",
                   help="share of open-mouthed cycle pairs that keep the real interior, reshaped and back, instead "
                        "of filling it (0: none), e.g. 0.5: the net learns to keep a mouth it can see (stills "
                        "identity, MODELS.md session 9)")
    p.add_argument("--psnr", type=float, default=0.0,
                   help="weight of the per-pair PSNR term (0: off), e.g. 0.03: the log of each pair's squared error in "
                        "the self-reenactment test's mouth and eye boxes, which averages PSNR per pair")
    p.add_argument("--teacher", default=None, metavar="CHECKPOINT",
                   help="distil this refine checkpoint as run (e.g. the same weights with the mirror average): its "
                        "composite of each pair becomes a second target, so one pass learns what two computed")
    p.add_argument("--teacher-weight", type=float, default=1.0, metavar="WEIGHT",
                   help="with --teacher: the weight of the weighted L1 to the teacher's composite (default 1)")
    p.add_argument("--att-focus", type=float, default=W_ATT_FOCUS, metavar="WEIGHT",
                   help=f"the attention prior around mouth and eyes (default {W_ATT_FOCUS:g}; higher: repaint less)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="export an exponential moving average of the weights (e.g. 0.999; 0: the last step's)")
    p.add_argument("--paint-mask", action="store_true",
                   help="let the net paint only where the warp changed mouth or eyes (RefineSpec.paint_mask), from here on")
    add_paint_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:
        return train(a)
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2


def train(a: argparse.Namespace) -> int:
    shares = (("--basis-warp", a.basis_warp), ("--closing", a.closing), ("--carry", a.carry), ("--mirror", a.mirror), ("--reference", a.reference))
    for option, share in shares:
        if share is not None and not 0.0 <= share <= 1.0:
            raise InputError(option, f"must be a share between 0 and 1, got {share:g}")
    for option, weight in (("--adv", a.adv), ("--l2", a.l2), ("--psnr", a.psnr), ("--att-focus", a.att_focus),
                           ("--teacher-weight", a.teacher_weight), ("--r1", a.r1), ("--feat-match", a.feat_match),
                           ("--l1-weight", a.l1_weight)):
        if weight < 0:
            raise InputError(option, f"must be a weight of at least 0, got {weight:g}")
    try:
        policy = parse_policy(a.diffaug)
    except ValueError as e:
        raise InputError("--diffaug", str(e)) from None
    if a.diffaug and not policy:
        raise InputError("--diffaug", f"names no op (choose from {', '.join(DIFFAUG_OPS)})")
    for option, on in (("--r1", a.r1 > 0), ("--diffaug", bool(policy)), ("--feat-match", a.feat_match > 0)):
        if on and not a.adv > 0:
            raise InputError(option, "needs --adv (it regularises the patch critic)")
    if not 0.0 <= a.ema < 1.0:
        raise InputError("--ema", f"must be a decay in [0, 1) (0: no average), got {a.ema:g}")
    if a.widths and min(a.widths) < 1:
        raise InputError("--widths", f"must be positive channel counts, got {' '.join(map(str, a.widths))}")
    if a.n_res < 0:
        raise InputError("--n-res", f"must be a number of blocks (0: keep the net's), got {a.n_res}")
    if a.lr_end < 0 or a.lr <= 0:
        raise InputError("--lr-end" if a.lr_end < 0 else "--lr", "must be positive (--lr-end 0: no annealing)")
    paint_set = paint_settings(a)  # by RefineSpec field; each option is --field-with-dashes
    if paint_set and not a.paint_mask:
        raise InputError("--" + next(iter(paint_set)).replace("_", "-"), "needs --paint-mask")
    bad = paint_option_problem(a.paint_grow, a.paint_min, a.paint_small, a.paint_keep, a.detail_sigma,
                               a.paint_keep_overlap, a.paint_keep_stretch)
    if bad is not None:
        raise InputError(*bad)
    teacher = None
    if a.teacher is not None:  # a file that is not a refine checkpoint: one line, before any work
        teacher, teacher_extra = load_refine(a.teacher)
        teacher.eval().requires_grad_(False)
    device = pick_device(a.device, DistEnv())
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    frames = load_frames(a.data, limit=a.limit)
    held = split_people(frames, a.held_out, a.seed) if a.held_out > 0 else np.zeros(len(frames), bool)
    train_frames = frames.subset(~held)
    if len(train_frames) < 2:
        raise InputError(", ".join(a.data), "fewer than 2 training frames after the held-out split", field="--data")
    run = Path(a.run)
    state_path, export_path = run / "state.safetensors", run / "refine.safetensors"
    averaged, ema_updates = {}, 0
    if state_path.is_file():
        net, opt, totals, averaged, ema_updates = load_state(state_path, a.lr)
        print(f"resuming {state_path}: {totals['steps']} steps, {totals['images']} images so far", flush=True)
    else:
        totals = empty_totals()
        if a.init is not None:
            net, extra = load_refine(a.init)
            totals.update(extra.get("training", {}))
            print(f"starting from {a.init}: {totals['steps']} steps so far", flush=True)
        else:
            net = RefineNet(RefineSpec(widths=tuple(a.widths or RefineSpec.widths)))
        opt = torch.optim.Adam(net.parameters(), lr=a.lr, betas=(0.9, 0.99))
    if a.n_res and a.n_res != net.spec.n_res:
        if a.n_res < net.spec.n_res:
            raise InputError("--n-res", f"the net has {net.spec.n_res} bottleneck blocks; it can grow, not shrink")
        deep = with_res_blocks(net, a.n_res)
        opt, net = carry_adam(net, opt, deep, a.lr), deep
        totals.setdefault("res_blocks", []).append({"from_step": totals["steps"], "n_res": a.n_res})
        print(f"bottleneck grown to {a.n_res} residual blocks at step {totals['steps']}", flush=True)
    if a.widths and tuple(a.widths) != net.spec.widths:
        grow = all(w >= o for w, o in zip(a.widths, net.spec.widths, strict=True))
        if not grow and any(w > o for w, o in zip(a.widths, net.spec.widths, strict=True)):
            raise InputError("--widths", f"the net's widths are {' '.join(map(str, net.spec.widths))}; "
                                         "they can grow or shrink, not both at once")
        reshaped = with_widths(net, a.widths) if grow else narrowed(net, a.widths)
        opt, net = carry_adam(net, opt, reshaped, a.lr), reshaped
        totals.setdefault("widths", []).append({"from_step": totals["steps"], "widths": list(a.widths)})
        print(f"{'widened' if grow else 'narrowed'} to {' '.join(map(str, a.widths))} at step {totals['steps']}",
              flush=True)
    if a.reference and not net.spec.n_reference:
        wide = with_reference(net, len(REFERENCE_CHANNELS))
        opt, net = carry_adam(net, opt, wide, a.lr), wide
        totals["reference_from_step"] = totals["steps"]
        print(f"added the reference input ({len(REFERENCE_CHANNELS)} channels) at step {totals['steps']}", flush=True)
    if a.flow and not net.spec.flow:
        wide = with_flow_head(net)
        opt, net = carry_adam(net, opt, wide, a.lr), wide
        totals["flow_from_step"] = totals["steps"]
        print(f"added a residual flow head at step {totals['steps']}", flush=True)
    if a.paint_mask:  # same weights, the attention only gated (or gated differently)
        want = replace(net.spec, paint_mask=True, **paint_set)
        if want != net.spec:
            if not net.spec.paint_mask:
                totals["paint_mask_from_step"] = totals["steps"]
            opt, net = respecified(net, opt, want, a.lr)
            totals.setdefault("paint_regions", []).append(
                {"from_step": totals["steps"], "grow": list(want.paint_grow), "min": want.paint_min,
                 "small": want.paint_small, "area": list(want.paint_area), "keep": want.paint_keep,
                 "keep_overlap": want.paint_keep_overlap, "keep_stretch": want.paint_keep_stretch})
            print(f"paint mask (reach {want.paint_grow[0]}/{want.paint_grow[1]} px, {want.paint_small} px for a small "
                  f"mouth change, min change {want.paint_min:g}, a seen mouth kept from {want.paint_keep:g} px"
                  f"{f' if stretched at most {want.paint_keep_stretch:g}x' if want.paint_keep_stretch else ''}) "
                  f"from step {totals['steps']}", flush=True)
    if a.basis is not None and BASES[a.basis] != net.spec.basis:  # same weights, another warp under them
        opt, net = respecified(net, opt, replace(net.spec, basis=BASES[a.basis]), a.lr)
        totals.setdefault("bases", []).append({"from_step": totals["steps"], "basis": a.basis})
        print(f"painting over the {a.basis} AU basis from step {totals['steps']}", flush=True)
    detail = {k: v for k, v in (("detail_sigma", a.detail_sigma), ("detail_spare_mouth", None if a.detail_spare_mouth
                                is None else a.detail_spare_mouth == "on")) if v is not None}
    if replace(net.spec, **detail) != net.spec:  # same weights, another colour
        opt, net = respecified(net, opt, replace(net.spec, **detail), a.lr)
        record_setting(totals, "detail_sigma", "px", net.spec.detail_sigma, "the warp's detail in the paint, sigma")
        record_setting(totals, "detail_spare_mouth", "on", float(net.spec.detail_spare_mouth),
                       "the net's own detail inside the target's inner mouth")
    for g in opt.param_groups:
        g["lr"] = a.lr
    if teacher is not None:
        why = teacher_mismatch(teacher.spec, net.spec)
        if why:
            raise InputError(a.teacher, why, field="--teacher")
        seen = {"file": Path(a.teacher).name, "steps": teacher_extra.get("training", {}).get("steps"),
                "mirror_average": teacher.spec.mirror_average}
        if (totals.get("teachers") or [{}])[-1].get("file") != seen["file"]:
            totals.setdefault("teachers", []).append({"from_step": totals["steps"], **seen})
    record_setting(totals, "distil", "weight", a.teacher_weight if teacher is not None else 0.0,
                   "distilling the teacher at weight")
    net.to(device)  # before the average copies it; the optimiser's moments follow their parameters
    move_optimizer_state(opt, device)
    if teacher is not None:
        teacher.to(device)
    ema = make_ema(net, a.ema) if a.ema > 0 else None
    if ema is not None and not restore_ema(ema, averaged, ema_updates):
        print(f"weight average (decay {a.ema:g}) starts at step {totals['steps']}", flush=True)
    share = (a.reference if a.reference is not None else 0.75) if net.spec.n_reference else 0.0
    mix = PairMix(basis_warp=a.basis_warp, residual_flow=net.spec.flow, reference=share, mirror=a.mirror,
                  closing=a.closing, carry=a.carry, own_mouth=net.spec.paint_keep_stretch > 0)
    held_people = sorted(set(np.array(frames.persons)[held]))
    report = mix_report(train_frames, PairMaker(train_frames, basis=load_basis(net.spec.basis), mix=mix,
                                                seed=a.seed + 7), n=400)
    info = {"data": [str(d) for d in a.data], "frames": len(frames), "train_frames": len(train_frames),
            "held_out_people": held_people, "mix": report, "batch": a.batch, "lr": a.lr, "lr_end": a.lr_end}
    run.mkdir(parents=True, exist_ok=True)
    (run / "data.json").write_text(json.dumps(info, indent=1))
    print(f"{len(train_frames)} training frames, {int(held.sum())} held out ({len(held_people)} people); "
          f"mix {json.dumps({k: round(v, 3) for k, v in report.items()})}", flush=True)

    stop = {"why": ""}

    def on_signal(sig, _frame) -> None:  # noqa: ANN001
        stop["why"] = signal.Signals(sig).name

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stream = PairStream(train_frames, a.batch, mix, a.seed + totals["runs"], net.spec.basis)
    loader = torch.utils.data.DataLoader(stream,
                                         batch_size=None, num_workers=a.workers,
                                         worker_init_fn=_loader_worker_init if a.workers else None,
                                         persistent_workers=a.workers > 0, prefetch_factor=4 if a.workers else None,
                                         pin_memory=device.type == "cuda")
    try:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(run / "tb"))
    except ImportError:  # the train extra is optional
        tb = None
    region = torch.from_numpy(np.array(feather_mask(net.spec.crop_size)))[None, None].to(device)
    critic = critic_opt = None
    critic_steps = 0
    if a.adv > 0:
        from train import refine_adv

        critic, critic_opt, critic_steps = refine_adv.load_critic(run / "critic.safetensors", a.adv_lr)
        critic.to(device)
        move_optimizer_state(critic_opt, device)
        totals.setdefault("adv_from_step", totals["steps"])
        print(f"adversarial stage: weight {a.adv:g}, critic at {critic_steps} steps", flush=True)
    record_setting(totals, "l2_terms", "weight", a.l2, "squared error at weight")
    record_setting(totals, "closing", "share", a.closing, "closing pairs at share")
    record_setting(totals, "mirror", "share", a.mirror, "mirrored pairs at share")
    record_setting(totals, "carry", "share", a.carry, "carried open mouths at share")
    record_setting(totals, "psnr_terms", "weight", a.psnr, "per-pair PSNR term at weight")
    record_setting(totals, "ema", "decay", a.ema, "weight average at decay")
    if a.att_focus != W_ATT_FOCUS or "att_focus" in totals:  # recorded once it leaves the default
        record_setting(totals, "att_focus", "weight", a.att_focus, "attention prior around mouth and eyes at")
    record_setting(totals, "r1", "gamma", a.r1, "R1 penalty on real crops at gamma")
    record_setting(totals, "feat_match", "weight", a.feat_match, "critic feature matching at weight")
    record_setting(totals, "diffaug", "policy", ",".join(policy), "DiffAugment policy", default="")
    record_setting(totals, "l1_weight", "weight", a.l1_weight, "L1 and gradient L1 at weight", default=1.0)
    augment = None
    if policy:  # its own draws (seeded per run, as the pairs are): nothing else's change
        aug_gen = torch.Generator().manual_seed(a.seed * 1000 + 17 + totals["runs"])

        def augment(x: torch.Tensor, maps: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
            return refine_adv.diff_augment(x, maps, policy, aug_gen)
    r1_last = torch.zeros(())
    raw_path = run / "refine_raw.safetensors"

    def save_all() -> None:
        save_state(state_path, net, opt, totals, ema)
        save_refine(net if ema is None else ema.module, export_path, extra={"training": totals})
        if ema is not None:
            save_refine(net, raw_path, extra={"training": totals})
        if critic is not None:
            refine_adv.save_critic(run / "critic.safetensors", critic, critic_opt, critic_steps)

    t0 = last_save = last_log = time.time()
    budget = a.minutes * 60.0
    step0, steps, smooth = totals["steps"], 0, None
    net.train()
    with (run / "metrics.jsonl").open("a") as log:
        for b in loader:
            b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
            if a.lr_end > 0:
                lr = a.lr * (a.lr_end / a.lr) ** min(1.0, (time.time() - t0) / budget)
                for g in opt.param_groups:
                    g["lr"] = lr
            out = losses(net, b, region, totals["steps"], l2=a.l2, psnr=a.psnr, att_focus=a.att_focus,
                         teacher_out=None if teacher is None else teacher_composite(teacher, b, region),
                         distil=a.teacher_weight, l1_weight=a.l1_weight)
            loss = out["loss"]
            if critic is not None:  # ramps in while the fresh critic learns what real mouths look like
                adv_ramp = min(1.0, critic_steps / ADV_RAMP_STEPS)
                fake_view = refine_adv.critic_view(out["out"], b["geometry"], b["weight"], augment)
                out["adv_g"] = refine_adv.generator_loss(critic, *fake_view)
                loss = loss + a.adv * adv_ramp * out["adv_g"]
                if a.feat_match > 0:  # un-augmented: real and composite features compared cell by cell
                    out["feat"] = refine_adv.feature_matching(critic, b["target"], out["out"], b["geometry"], b["weight"])
                    loss = loss + a.feat_match * adv_ramp * out["feat"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
            if critic is not None:
                critic_opt.zero_grad(set_to_none=True)
                lazy_r1 = a.r1 > 0 and critic_steps % R1_EVERY == 0
                out["adv_d"], r1 = refine_adv.critic_step_loss(
                    critic, refine_adv.critic_view(b["target"], b["geometry"], b["weight"], augment),
                    refine_adv.critic_view(out["out"].detach(), b["geometry"], b["weight"], augment),
                    a.r1 if lazy_r1 else 0.0)
                d_loss = out["adv_d"]
                if r1 is not None:
                    d_loss = d_loss + R1_EVERY * r1
                    r1_last = r1.detach()
                if a.r1 > 0:
                    out["adv_r1"] = r1_last  # the last one computed, logged every step
                d_loss.backward()
                critic_opt.step()
                critic_steps += 1
            steps += 1
            totals["steps"] += 1
            totals["images"] += a.batch
            vals = {k: float(out[k].detach()) for k in ("loss", "l1", "l2", "grad", "color", "att", "att_tv", "flow_px", "flow_err",
                                                         "psnr", "adv_g", "adv_d", "adv_r1", "feat", "distil") if k in out}
            smooth = vals if smooth is None else {k: 0.95 * smooth[k] + 0.05 * v for k, v in vals.items()}
            now = time.time()
            if tb is not None and totals["steps"] % 10 == 0:
                for k, v in vals.items():
                    tb.add_scalar(f"train/{k}", v, totals["steps"])
            if now - last_log > 30 or steps == 1:
                el = now - t0
                rate = steps / el
                eta = budget - el
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"step {totals['steps']} ({steps} this run) {rate:.2f} steps/s {rate * a.batch:.1f} img/s "
                      f"loss {smooth['loss']:.4f} l1 {smooth['l1']:.4f} l2 {smooth['l2']:.4f} grad {smooth['grad']:.4f} color {smooth['color']:.4f} "
                      f"att {smooth['att']:.4f} boxes {smooth['psnr']:.2f} dB lr {opt.param_groups[0]['lr']:.1e} flow {smooth['flow_px']:.2f}px (err {smooth['flow_err']:.2f}) "
                      + (f"adv G {smooth['adv_g']:.3f} D {smooth['adv_d']:.3f} " if critic is not None else "")
                      + (f"R1 {smooth['adv_r1']:.4f} " if "adv_r1" in smooth else "")
                      + (f"FM {smooth['feat']:.4f} " if "feat" in smooth else "")
                      + (f"distil {smooth['distil']:.4f} " if teacher is not None else "") +
                      f"ETA {max(eta, 0) / 60:.1f} min, peak RSS {rss:.0f} MB", flush=True)
                log.write(json.dumps({"step": totals["steps"], "time": now, "lr": opt.param_groups[0]["lr"], **smooth}) + "\n")
                log.flush()
                last_log = now
            if totals["steps"] % 500 == 0:
                sample_grid(run / "samples" / f"step{totals['steps']:07d}.png", b, out["out"], out["A"])
            done = stop["why"] or now - t0 >= budget or (a.steps and steps >= a.steps)
            if done or now - last_save >= a.save_every:
                totals["seconds"] = float(totals.get("seconds", 0.0)) + (now - last_save)
                last_save = now
                save_all()
            if done:
                break
    totals["runs"] += 1
    save_all()
    sample_grid(run / "samples" / "last.png", b, out["out"], out["A"])
    why = stop["why"] or ("step limit" if a.steps and steps >= a.steps else "time budget")
    print(f"stopped ({why}) after {steps} steps ({totals['steps'] - step0 + step0} in all); wrote {export_path}",
          flush=True)
    if tb is not None:
        tb.close()
    return 130 if stop["why"] == "SIGINT" else 0


if __name__ == "__main__":
    raise SystemExit(main())
