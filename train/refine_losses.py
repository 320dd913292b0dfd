"""The ``refine`` trainer's losses: what the composite is judged by against the real target.

:func:`losses` is the supervised objective of :mod:`train.refine_train` (the adversarial terms live in
:mod:`train.refine_adv`); its weights are module constants so the trainer's options and the tests
name one home for each.
"""

from __future__ import annotations

import torch

from rtanim.models.refine import FLOW_MAX, RefineNet, RefineSpec, compose_crop, shift

#: Loss weights. The attention prior pulls A to 1 (keep the full-resolution warp) away from the
#: mouth and eyes, and only lightly where painting is expected.
W_GRAD = 1.0
W_ATT = 0.03
W_ATT_FOCUS = 0.003
W_ATT_TV = 0.02
#: The colour is also supervised directly around the mouth and eyes, so it learns to paint before
#: the attention has a reason to let it through (else the prior saturates A at 1 first and its
#: sigmoid has no gradient left); the prior itself ramps in over the first steps.
W_COLOR = 0.5
PRIOR_RAMP_STEPS = 2000
#: The residual flow (flow head only): smooth (squared differences of neighbours, in crop px) and
#: small where it is not needed, so it moves lips and lids as wholes instead of tearing texture.
#: Squared, not L1: an L1 penalty's constant pull at zero outweighs the image's gradient for a flow
#: that starts at zero, and the head never leaves it (measured: 1e-4 weights after 550 steps).
W_FLOW_TV = 0.01
W_FLOW_MAG = 0.001
#: ... and supervised (L1, crop px, x5 around mouth and eyes) by the flow that carries the AU
#: basis's landmarks to the target's real ones in video pairs warped as at run time (zero in the
#: others): photometric gradients alone barely move a flow that starts at zero (measured: the
#: head's weights stayed at 3e-4 over 600 steps), landmarks tell it where lips and lids really go.
W_FLOW_SUP = 0.05
#: The per-pair PSNR term (--psnr): the log of each pair's squared error in the boxes the
#: self-reenactment test scores, floored at this (in [-1, 1] units: 36 dB) so that an unchanged
#: identity pair does not pull without bound.
PSNR_FLOOR = 1e-3


def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def box_psnr_loss(out: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean PSNR in dB): the mean over pairs and boxes of log(squared error in the box).

    The self-reenactment test averages each pair's PSNR, i.e. -log of its error, so a pair that is
    nearly right gains as much from halving its error as a hard one does; a pooled squared error
    (``l2``) is ruled by the hard pairs instead."""
    err = ((out - target) ** 2).mean(1, keepdim=True)  # [B,1,S,S]
    mse = (err * boxes).sum((2, 3)) / boxes.sum((2, 3)).clamp(min=1.0)  # [B,2]
    loss = torch.log(mse + PSNR_FLOOR).mean()
    db = (-10.0 * torch.log10((mse.detach() + PSNR_FLOOR) / 4.0)).mean()  # [0, 1] units, as the test
    return loss, db


def teacher_mismatch(teacher: RefineSpec, student: RefineSpec) -> str | None:
    """Why ``teacher`` cannot be distilled into ``student`` (they must read the same inputs), else None."""
    for field in ("au_codes", "crop_size", "n_geometry", "n_reference", "flow"):
        if getattr(teacher, field) != getattr(student, field):
            return f"its {field} ({getattr(teacher, field)!r:.60}) differs from the trained net's ({getattr(student, field)!r:.60})"
    return None


def teacher_composite(teacher: RefineNet, b: dict[str, torch.Tensor], region: torch.Tensor) -> torch.Tensor:
    """The teacher's composite of a batch, as the student's is made (no gradients)."""
    with torch.no_grad():
        att, color, *flow = teacher(b["warped"], b["aus"], b["geometry"], b.get("reference"))
        return compose_crop(shift(b["warped"], flow[0]) if flow else b["warped"], att, color, region)


def losses(net: RefineNet, b: dict[str, torch.Tensor], region: torch.Tensor, step: int = PRIOR_RAMP_STEPS,
           l2: float = 0.0, psnr: float = 0.0, att_focus: float = W_ATT_FOCUS,
           teacher_out: torch.Tensor | None = None, distil: float = 0.0, l1_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Weighted L1 and gradient L1 of the composite against the target, the colour's own L1 around
    mouth and eyes, and the attention prior (ramped in over the first ``PRIOR_RAMP_STEPS``).

    ``l2`` adds the same-weighted squared error: L1 is minimised by the median of what a mouth may
    look like (teeth or a dark cavity, whichever is likelier), squared error by their mean, which is
    what PSNR against the real frame rewards. ``psnr`` adds :func:`box_psnr_loss` at that weight.
    ``teacher_out`` (a teacher's composite, :func:`teacher_composite`) adds the same-weighted L1 to it
    at weight ``distil``: the mirror average run twice per face; a student learns it in one pass.
    ``att_focus`` is the attention prior's weight around mouth and eyes: raised, the net repaints
    only where that pays (the inside of a mouth), and leaves lips the warp already moved.
    ``l1_weight`` scales the composite's weighted L1 and gradient L1 (the supervised reconstruction
    terms; the colour's own L1, the attention prior and TV stay): lowered under an adversarial term,
    the L1 is an anchor on content while the critic sharpens texture."""
    att, color, *flow = net(b["warped"], b["aus"], b["geometry"], b.get("reference"))
    moved = shift(b["warped"], flow[0]) if flow else b["warped"]
    out = compose_crop(moved, att, color, region)
    w = b["weight"]
    norm = w.sum() * 3 + 1e-6
    rec = (w * (out - b["target"]).abs()).sum() / norm
    sq = (w * (out - b["target"]) ** 2).sum() / norm
    gx, gy = gradients(out)
    tx, ty = gradients(b["target"])
    grad = ((w[..., :, 1:] * (gx - tx).abs()).sum() + (w[..., 1:, :] * (gy - ty).abs()).sum()) / (2 * norm)
    ax, ay = gradients(att)
    focus = (w > 1.5).float()
    att_mean = (1 - att).mean()
    ramp = min(1.0, step / PRIOR_RAMP_STEPS)
    att_prior = ramp * (((1 - att) * (1 - focus)).mean() * W_ATT + ((1 - att) * focus).mean() * att_focus)
    att_tv = ax.abs().mean() + ay.abs().mean()
    col = (focus * (color - b["target"]).abs()).sum() / (focus.sum() * 3 + 1e-6)
    total = l1_weight * rec + l1_weight * W_GRAD * grad + W_COLOR * col + att_prior + ramp * W_ATT_TV * att_tv + l2 * sq
    box_db = torch.zeros(())
    if "boxes" in b:
        box_loss, box_db = box_psnr_loss(out, b["target"], b["boxes"])
        if psnr > 0:
            total = total + psnr * box_loss
    flow_px = flow_err = torch.zeros(())
    if flow:
        px = flow[0] * (net.spec.crop_size / 2.0)
        fx, fy = gradients(px)
        flow_px = px.abs().mean()
        want = b["flow"].clamp(-FLOW_MAX, FLOW_MAX) * (net.spec.crop_size / 2.0) if "flow" in b else torch.zeros_like(px)
        sup = flow_err = (w * (px - want).abs()).sum() / (w.sum() * 2 + 1e-6)
        total = (total + W_FLOW_SUP * sup + W_FLOW_TV * ((fx ** 2).mean() + (fy ** 2).mean())
                 + W_FLOW_MAG * (px ** 2).mean())
    result = {"l1": rec, "l2": sq, "grad": grad, "color": col, "att": att_mean, "att_tv": att_tv,
              "flow_px": flow_px, "flow_err": flow_err, "psnr": box_db, "out": out, "A": att}
    if teacher_out is not None:
        result["distil"] = (w * (out - teacher_out).abs()).sum() / norm
        total = total + distil * result["distil"]
    return {"loss": total, **result}
