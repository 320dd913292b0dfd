"""A held-out critic: can a small network, trained fresh, tell a model's mouths (or eyes) from real ones?

For each model, a small CNN learns to separate real patches (the real target's mouth or eyes) from
the model's patches of the same pairs on one half of the held-out people, and scores the other
half; the halves then swap, and the ROC AUC is taken over every held-out score. 0.5 means it
cannot tell; 1.0 means every generated patch is told apart. It sees texture and shape at patch
resolution (colour, plus the luma's Laplacian, so fine detail is as easy to learn as colour), which
a blur, a stretched lip or an eye that shows its white give away. Seeded, so the same patches give
the same figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Patch size the critic sees (height, width) for each region.
PATCH = {"mouth": (40, 56), "eyes": (24, 72)}
STEPS = 600
BATCH = 32


def patch(rgb: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """``rgb[y0:y1, x0:x1]`` resized to ``size`` (h, w), uint8."""
    import cv2

    x0, y0, x1, y1 = box
    return cv2.resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC AUC of ``scores`` for ``labels`` 1 (fake) against 0 (real); ties count half."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))  # every (fake, real) pair: a few hundred patches


def _tensor(patches: np.ndarray):
    """uint8 [N,H,W,3] -> float [N,4,H,W]: RGB in [-1, 1] and the luma's Laplacian."""
    import cv2
    import torch

    lap = np.stack([cv2.Laplacian(cv2.cvtColor(p, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F) for p in patches])
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return torch.cat([x, torch.from_numpy(lap)[:, None] / 64.0], 1)


def _net(channels: int = 4):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, 1, 1), nn.LeakyReLU(0.2), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, 1, 1), nn.LeakyReLU(0.2), nn.AvgPool2d(2),
        nn.Conv2d(32, 32, 3, 1, 1), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1))


def _train_and_score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int,
                     steps: int = STEPS) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = _tensor(train_x)
    y = torch.from_numpy(train_y).float()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), min(BATCH, len(x))))
        xb = x[idx]
        if rng.random() < 0.5:
            xb = xb.flip(3)
        loss = F.binary_cross_entropy_with_logits(net(xb).squeeze(1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(_tensor(test_x)).squeeze(1).numpy()


def held_out_scores(real: Sequence[np.ndarray], fake: Sequence[np.ndarray], groups: Sequence[str],
                    seed: int = 0, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores of a critic trained on one half of the people and scored on the other, both ways.

    Args:
        real, fake: patches of the same pairs (uint8 HxWx3, one size), in the same order.
        groups: each pair's person; people are split into two halves of about equal pair counts.

    Returns:
        Every held-out score and its label (1 fake, 0 real), or None when either half has no pair.
    """
    import torch

    people = sorted(set(groups), key=lambda g: (-sum(1 for x in groups if x == g), g))
    half_a: set[str] = set()
    count_a = 0
    for p in people:  # greedy: the larger people first, each to the smaller half
        n = sum(1 for x in groups if x == p)
        if count_a <= len(groups) / 2 - n / 2:
            half_a.add(p)
            count_a += n
    in_a = np.array([g in half_a for g in groups])
    if in_a.all() or not in_a.any():
        return None
    real_a, fake_a = np.stack(real), np.stack(fake)
    scores, labels = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for fold, train_mask in enumerate((in_a, ~in_a)):
            test_mask = ~train_mask
            tx = np.concatenate([real_a[train_mask], fake_a[train_mask]])
            ty = np.concatenate([np.zeros(train_mask.sum()), np.ones(train_mask.sum())])
            vx = np.concatenate([real_a[test_mask], fake_a[test_mask]])
            scores.append(_train_and_score(tx, ty, vx, seed + fold, steps))
            labels.append(np.concatenate([np.zeros(test_mask.sum()), np.ones(test_mask.sum())]))
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(scores), np.concatenate(labels)


def held_out_auc(real: Sequence[np.ndarray], fake: Sequence[np.ndarray], groups: Sequence[str],
                 seed: int = 0, steps: int = STEPS) -> float:
    """ROC AUC over every held-out score of :func:`held_out_scores`; NaN when either half has no pair."""
    scored = held_out_scores(real, fake, groups, seed, steps)
    return math.nan if scored is None else roc_auc(*scored)


def auc_interval(scores: np.ndarray, labels: np.ndarray, seed: int = 0, draws: int = 1000,
                 level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of :func:`roc_auc`, real and generated scores resampled apart: on a few
    dozen patches the AUC moves by tenths, and a gate on it must see that (NaN, NaN on no scores)."""
    fake, real = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if fake.size == 0 or real.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(fake, fake.size), rng.choice(real, real.size)])
        aucs.append(roc_auc(scores[idx], labels[idx]))
    tail = 100 * (1 - level) / 2
    return float(np.percentile(aucs, tail)), float(np.percentile(aucs, 100 - tail))
