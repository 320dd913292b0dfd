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
"""

from __future__ import annotations

import json
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
