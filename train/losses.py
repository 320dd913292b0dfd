"""GANimation's losses (Pumarola et al., ECCV 2018, and the authors' code) plus flow supervision.

Critic: WGAN-GP (Gulrajani et al.) on the patch head, and the AU regression head trained on real
images (MSE / batch, as the original code scales it). Generator: adversarial, the critic's AU
regression of the result vs the target AUs, the cycle back to the source AUs (L1), and the
attention terms. Penalising mean(A) keeps A from saturating at 1 (the do-nothing solution, since
A = 1 returns the input); the total variation, summed as in the original, keeps A smooth.

Flow models add a term tying F, sampled where each control landmark should move to, to the
backward motion the AU basis predicts for (target - source) AUs (rtanim.models.geometry.flow_targets),
and a mean total variation on F.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def critic_wasserstein(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(-E[D(real)], E[D(fake)]): the critic maximises the gap between real and generated scores."""
    return -d_real.float().mean(), d_fake.float().mean()


def generator_adversarial(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.float().mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] at ``x_hat = alpha * real + (1 - alpha) * fake`` (alpha [N,1,1,1])."""
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    score = critic(x)[0]
    (grad,) = torch.autograd.grad(score.float().sum(), x, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return ((norm - 1) ** 2).mean()


def au_condition(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the critic's AU regression and the AUs, divided by the batch size as in the original
    (so its weight 4000 is 160 per sample at the paper's batch of 25)."""
    return F.mse_loss(pred.float(), target.float()) / pred.shape[0]


def cycle(reconstruction: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(reconstruction.float(), real.float())


def attention_mean(attention: torch.Tensor) -> torch.Tensor:
    return attention.float().mean()


def total_variation_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of absolute neighbour differences (the original's ``_compute_loss_smooth``)."""
    x = x.float()
    return (x[..., :, 1:] - x[..., :, :-1]).abs().sum() + (x[..., 1:, :] - x[..., :-1, :]).abs().sum()


def total_variation_mean(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def flow_targets(landmarks: torch.Tensor, delta: torch.Tensor, basis: torch.Tensor,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`rtanim.models.geometry.flow_targets` on batches.

    ``landmarks`` [N,P,2] source crop px of the control landmarks, ``delta`` [N,K] target - source
    AUs in the basis's codes, ``basis`` [K,P,2] crop px per unit AU. Returns (points [N,P,2] where
    the landmarks go, in grid_sample's normalised coordinates; flow [N,P,2] the backward offsets
    the flow should have there, in the same units).
    """
    d = torch.einsum("nk,kpc->npc", delta.float(), basis.float())
    target = landmarks.float() + d
    return (2.0 * target + 1.0) / size - 1.0, -d / (size / 2.0)


def flow_supervision(flow: torch.Tensor, points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the predicted flow [N,2,H,W] sampled at ``points`` [N,P,2] and ``target`` [N,P,2]."""
    sampled = F.grid_sample(flow.float(), points[:, None].float(), mode="bilinear", padding_mode="border",
                            align_corners=False)  # [N,2,1,P]
    return F.l1_loss(sampled[:, :, 0].transpose(1, 2), target.float())
