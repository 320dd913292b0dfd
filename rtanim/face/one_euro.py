"""One Euro filter (Casiez, Roussel & Vogel, CHI 2012) over numpy arrays.

A low-pass filter whose cutoff rises with speed: a still head is smoothed hard (no
crop jitter), a moving one is followed with little lag. Each array element is an
independent signal, so one filter smooths all 478x3 landmark coordinates at once.
"""

from __future__ import annotations

import math

import numpy as np

#: Defaults for landmarks with speed measured in crop pixels per second (see tracking.py).
#: min_cutoff (Hz): the cutoff at rest; lower = steadier still face, more lag when it starts moving.
#: beta (1 / crop px): how fast the cutoff rises with speed; higher = less lag on fast motion.
#: d_cutoff (Hz): smoothing of the speed estimate itself; the paper's 1 Hz.
#: Chosen on the shared talking-head clips (MediaPipe VIDEO mode already smooths a little):
#: these cut crop-corner jitter by ~40% (WolfgangLanger 0.33 -> 0.20 crop px, residual from a
#: 5-frame mean) for a mean lag of ~0.5-1 crop px while the head moves; beta 0.3 halves
#: the lag but keeps most of the jitter, beta 0 removes ~70% of it but lags by ~2-5 px.
MIN_CUTOFF = 1.0
BETA = 0.05
D_CUTOFF = 1.0


def smoothing_factor(dt: float, cutoff: float | np.ndarray) -> float | np.ndarray:
    """Exponential smoothing weight of a first-order low-pass with ``cutoff`` Hz over ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Stateful One Euro filter; call it with each new sample and its time in seconds."""

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA, d_cutoff: float = D_CUTOFF) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, speed_scale: float = 1.0) -> np.ndarray:
        """Filtered ``x`` at time ``t``. ``speed_scale`` converts x's units per second to the
        units ``beta`` is defined in (e.g. crop pixels per frame pixel), so one tuning
        serves faces of any size and any frame resolution."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # repeated or out-of-order timestamp: nothing new to learn from
            return self._x.copy()
        dx = (x - self._x) / dt
        a_d = smoothing_factor(dt, self.d_cutoff)
        self._dx = self._dx + a_d * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx) * speed_scale
        a = smoothing_factor(dt, cutoff)
        self._x = self._x + a * (x - self._x)
        self._t = t
        return self._x.copy()
