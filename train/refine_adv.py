"""The adversarial refinement stage of the ``refine`` model: a small patch critic on mouth and eyes.

Trained with L1 alone the net paints the average of what could be there: a blurred mouth and
blurred lids. Blur is what the identity metric punishes (measured on the 16 expressive stills:
blurring only the lips, sigma 1.5 crop px, moves dlib's embedding by 0.08; only the eyes, by
0.10). A GAN stage on top of the converged L1 base is the cheap cure (pix2pix, Isola et al. 2017):
a critic that tells real mouths and lids from painted ones, its hinge loss weighted far below the
L1 terms so it sharpens texture without moving content.

The critic sees the crop with the target's mouth and eye maps (so a closed mouth painted where the
geometry says open is fake too) and scores 16 x 16 patches; only patches over the mouth and the eyes
count, where the net paints. Spectral normalisation keeps it from overpowering the generator on a
CPU-sized batch.

Issue 32's additions, each a trainer option (:mod:`train.refine_train`), all off by default:

- an R1 penalty on real crops (Mescheder et al. 2018; lazily every ``R1_EVERY`` critic steps, scaled
  up by that, as in StyleGAN2): :func:`r1_penalty`;
- Differentiable Augmentation (Zhao et al. 2020) of what the critic sees, real and composite alike,
  for a small data set: :func:`diff_augment` (translation moves the geometry and the patch weights
  with the image); :func:`critic_view` builds what the critic reads from a batch;
- critic feature matching for the net (pix2pixHD): :meth:`PatchCritic.features`,
  :func:`feature_matching`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from train.state_io import adam_tensors, restore_adam

#: Critic inputs: RGB plus the geometry's target mouth and target eyes maps.
CRITIC_CHANNELS = 5
#: Patch grid stride (three stride-2 convolutions).
PATCH = 8
#: R1 is computed lazily, every this many critic steps, and weighted by as much when it is.
R1_EVERY = 4


class PatchCritic(nn.Module):
    """Crop [N,3,S,S] in [-1,1] + target maps [N,2,S,S] -> patch scores [N,1,S/8,S/8]."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        a, b, c = widths
        layers: list[nn.Module] = []
        for cin, cout in ((CRITIC_CHANNELS, a), (a, b), (b, c)):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        layers += [spectral_norm(nn.Conv2d(c, c, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                   spectral_norm(nn.Conv2d(c, 1, 3, 1, 1))]
        self.net = nn.Sequential(*layers)
        self.widths = widths

    def forward(self, image: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, geometry[:, :2]], 1))

    def features(self, image: torch.Tensor, geometry: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each hidden layer (S/2, S/4, S/8, S/8), for feature matching; the same
        layers as :meth:`forward` (which stays as it was, so saved critics load)."""
        x, feats = torch.cat([image, geometry[:, :2]], 1), []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return feats


def patch_weight(weight: torch.Tensor) -> torch.Tensor:
    """Which critic patches count [N,1,S/8,S/8]: the share of each patch over mouth and eyes
    (the loss weight's x5 focus), so the critic judges only what the net paints."""
    return F.avg_pool2d((weight > 1.5).float(), PATCH)


def _weighted(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x * w).sum() / (w.sum() + 1e-6)


def critic_loss(critic: PatchCritic, real: torch.Tensor, fake: torch.Tensor, geometry: torch.Tensor,
                w: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the critic on real targets and (detached) composites."""
    return (_weighted(F.relu(1.0 - critic(real, geometry)), w)
            + _weighted(F.relu(1.0 + critic(fake.detach(), geometry)), w))


def generator_loss(critic: PatchCritic, fake: torch.Tensor, geometry: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return -_weighted(critic(fake, geometry), w)


def r1_penalty(critic: PatchCritic, real: torch.Tensor, geometry: torch.Tensor, w: torch.Tensor,
               gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(gamma / 2) E[|grad_x D(x)|^2] on real crops ``x`` (R1), D(x) being each crop's patch scores
    averaged with the patch weights ``w`` (the score the hinge loss reads); the gradient is the
    image's only, the geometry is the condition. Returns (penalty, the critic's real scores) so the
    hinge term can reuse the one forward pass. Differentiable in the critic's weights."""
    x = real.detach().requires_grad_(True)
    scores = critic(x, geometry)
    per_crop = (scores * w).sum((1, 2, 3)) / (w.sum((1, 2, 3)) + 1e-6)
    (grad,) = torch.autograd.grad(per_crop.sum(), x, create_graph=True)
    return 0.5 * gamma * grad.square().sum((1, 2, 3)).mean(), scores


def critic_step_loss(critic: PatchCritic, real: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                     fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor], r1_gamma: float = 0.0,
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hinge loss, R1 penalty or None) of the critic on a real and a (detached) fake view, each
    (image, geometry, patch weights) as :func:`critic_view` makes them: the views may differ where
    DiffAugment moved them. ``r1_gamma`` > 0 adds R1 on the real view (one forward for both).
    With ``r1_gamma`` 0 and equal geometry and weights this is :func:`critic_loss`, call for call."""
    (ri, rg, rw), (fi, fg, fw) = real, fake
    if r1_gamma > 0:
        r1, real_scores = r1_penalty(critic, ri, rg, rw, r1_gamma)
    else:
        r1, real_scores = None, critic(ri, rg)
    hinge = _weighted(F.relu(1.0 - real_scores), rw) + _weighted(F.relu(1.0 + critic(fi.detach(), fg)), fw)
    return hinge, r1


def feature_matching(critic: PatchCritic, real: torch.Tensor, fake: torch.Tensor, geometry: torch.Tensor,
                     weight: torch.Tensor) -> torch.Tensor:
    """L1 between the critic's hidden activations on the real target (detached) and on the composite,
    averaged over the layers; each layer's L1 is weighted by the share of mouth and eyes under each of
    its cells (the full-resolution loss weight's x5 focus pooled to the layer's size, as
    :func:`patch_weight` is to the patch grid), a plain mean where the sizes do not divide."""
    with torch.no_grad():
        want = critic.features(real, geometry)
    got = critic.features(fake, geometry)
    focus = (weight > 1.5).float()
    terms = []
    for r, f in zip(want, got, strict=True):
        diff = (f - r).abs()
        k = focus.shape[-1] // f.shape[-1]
        if k >= 1 and k * f.shape[-1] == focus.shape[-1] and k * f.shape[-2] == focus.shape[-2]:
            wl = F.avg_pool2d(focus, k) if k > 1 else focus
            terms.append((diff * wl).sum() / (wl.sum() * diff.shape[1] + 1e-6))
        else:
            terms.append(diff.mean())
    return torch.stack(terms).mean()


# ----------------------------------------------------------------------------- DiffAugment
# Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS 2020), after the
# authors' DiffAugment_pytorch.py: each op draws its own parameters per crop; the same policy is
# applied to real crops and composites (with draws of their own), for the critic's loss and the
# net's adversarial loss alike. Colour and cutout change the image only; translation moves the
# image and its maps (the critic's geometry channels, the loss weight) together, zeros coming in.

#: The ops a policy may name, and the default policy of a bare ``--diffaug``.
DIFFAUG_OPS = ("color", "translation", "cutout")
DIFFAUG_DEFAULT = "color,translation,cutout"


def _rand(n: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=generator).to(device=like.device, dtype=like.dtype)


def aug_color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5), per crop, in [-1, 1] units."""
    n = x.shape[0]
    x = x + (_rand(n, generator, x) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (_rand(n, generator, x) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(n, generator, x) + 0.5) + mean


def aug_translation(x: torch.Tensor, maps: list[torch.Tensor], ratio: float = 0.125,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Shift each crop by up to ``ratio`` of its size (whole pixels, zeros come in), its ``maps``
    ([N,C,S,S] each) by the same shift."""
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=generator).to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=generator).to(x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = (gy - ty + 1).clamp(0, h + 1)  # content moves by (+ty, +tx): out[y] = in[y - ty]
    gx = (gx - tx + 1).clamp(0, w + 1)
    sizes = [c] + [m.shape[1] for m in maps]
    both = torch.cat([x, *(m.to(x.dtype) for m in maps)], 1)
    padded = F.pad(both, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    moved = padded[gb, gy, gx].permute(0, 3, 1, 2)
    parts = list(torch.split(moved, sizes, 1))
    return parts[0].contiguous(), [p.to(m.dtype).contiguous() for p, m in zip(parts[1:], maps, strict=True)]


def aug_cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero (mid-grey) a square of ``ratio`` of the crop's size at a random place, per crop."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=generator).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= oy - ch // 2) & (ys < oy - ch // 2 + ch) & (xs >= ox - cw // 2) & (xs < ox - cw // 2 + cw))
    return x * (~inside).to(x.dtype)[:, None]


def parse_policy(policy: str) -> tuple[str, ...]:
    """The ops of a comma-separated policy, in order, each once; raises ValueError on an unknown one."""
    ops: list[str] = []
    for op in (o.strip() for o in policy.split(",")):
        if not op:
            continue
        if op not in DIFFAUG_OPS:
            raise ValueError(f"unknown DiffAugment op {op!r} (choose from {', '.join(DIFFAUG_OPS)})")
        if op not in ops:
            ops.append(op)
    return tuple(ops)


def diff_augment(x: torch.Tensor, maps: list[torch.Tensor], policy: str | tuple[str, ...],
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``x`` [N,3,S,S] in [-1, 1] augmented by ``policy`` (ops in :data:`DIFFAUG_OPS`, in the order
    given), differentiably; ``maps`` move with it under translation and are otherwise left alone."""
    for op in parse_policy(policy) if isinstance(policy, str) else policy:
        if op == "color":
            x = aug_color(x, generator)
        elif op == "translation":
            x, maps = aug_translation(x, maps, generator=generator)
        elif op == "cutout":
            x = aug_cutout(x, generator=generator)
    return x, maps


def critic_view(image: torch.Tensor, geometry: torch.Tensor, weight: torch.Tensor,
                augment: Callable[[torch.Tensor, list[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, geometry, patch weights) as the critic reads them; with ``augment`` (e.g. a
    :func:`diff_augment` with its policy bound) the image is augmented and the critic's two geometry
    channels and the full-resolution loss weight move with it before the patch weights are pooled."""
    if augment is None:
        return image, geometry, patch_weight(weight)
    image, (geo, weight) = augment(image, [geometry[:, :2], weight])
    return image, geo, patch_weight(weight)


def save_critic(path: Path, critic: PatchCritic, opt: torch.optim.Optimizer, steps: int) -> None:
    """Critic weights and Adam moments (resume across sessions), safetensors, atomically."""
    from safetensors.torch import save_file

    from rtanim.files import staged

    tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in critic.state_dict().items()}
    moments, opt_steps = adam_tensors(critic, opt)
    tensors.update(moments)
    meta = {"format": "rtanim.refine-critic", "widths": json.dumps(list(critic.widths)),
            "opt_steps": opt_steps, "steps": str(steps)}
    with staged(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_critic(path: Path | None, lr: float) -> tuple[PatchCritic, torch.optim.Optimizer, int]:
    """(critic, its Adam, its steps so far): from ``path`` when it exists, else fresh."""
    if path is None or not path.is_file():
        critic = PatchCritic()
        return critic, torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.99)), 0
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    critic = PatchCritic(tuple(json.loads(meta["widths"])))
    critic.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.99))
    restore_adam(critic, opt, tensors, meta["opt_steps"])
    return critic, opt, int(meta["steps"])
