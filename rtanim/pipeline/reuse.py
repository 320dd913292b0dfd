"""Work skipped when nothing changes: reuse a face's last generator output while it holds still.

A face that does not move and keeps its expression, with target AUs that do not change, would
get the same generator output frame after frame. :class:`OutputCache` remembers, per face id,
the face and targets its generator output was made for (the *reference*) and hands that output
out again while the face stays within tolerance of it:

- its landmarks moved less than ``landmark_px`` RMS, in crop pixels (the frame distance times
  the crop scale, so the tolerance means the same for a small and a large face);
- no live AU and no target AU changed by more than ``au``.

Comparing with the reference, not with the previous frame, means slow drift adds up and
triggers a fresh run. The output is reused at most ``refresh`` times in a row, so what
landmarks and AUs do not see (a change of light, say) is picked up within that many frames.
Compose still applies the reused output with the current frame's crop transform and pixels.
A face that is missing from a frame loses its reference. Faces without landmarks (stand-ins
in tests) are never reused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rtanim.face.compose import FaceOutput

if TYPE_CHECKING:
    from rtanim.pipeline.jobs import FaceJob

#: Largest RMS landmark motion (crop pixels, at the 128-pixel crop) that still counts as still.
LANDMARK_PX = 0.5
#: Largest change of any live or target AU (0-1 scale) that still counts as unchanged.
AU_TOL = 0.01
#: Most consecutive reuses of one output before the generator runs again regardless.
REFRESH = 30


@dataclass(frozen=True)
class ReuseTolerance:
    """When a face counts as unchanged (see the module docstring)."""

    landmark_px: float = LANDMARK_PX
    au: float = AU_TOL
    refresh: int = REFRESH


@dataclass
class _Reference:
    landmarks: np.ndarray  # 478 x 2 frame px
    live: Mapping[str, float]
    target: Mapping[str, float]
    output: FaceOutput | None = None  # filled once the generator ran (later in the same batch)
    reused: int = 0


def _au_change(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return max((abs(float(a.get(k, 0.0)) - float(b.get(k, 0.0))) for k in a.keys() | b.keys()), default=0.0)


def _crop_scale(transform: Any) -> float:
    m = np.asarray(transform.matrix, np.float64)[:, :2]
    return float(np.sqrt(abs(np.linalg.det(m))))


class OutputCache:
    """Per-face references for one stream (the pipeline's generate stage owns one; not thread-safe)."""

    def __init__(self, tolerance: ReuseTolerance | None = None) -> None:
        self.tolerance = tolerance or ReuseTolerance()
        self._refs: dict[int, _Reference] = {}

    def plan(self, jobs: Sequence[FaceJob]) -> tuple[list[_Reference], list[int]]:
        """One reference per job, and the indices of the jobs the generator must run on.

        Jobs are taken in order, so in an offline batch a face's later frames can reuse the output
        its earlier frame is about to get. Call :meth:`fill` with the generator's outputs after.
        """
        refs, run = [], []
        for i, job in enumerate(jobs):
            ref = self._match(job)
            if ref is None:
                ref = self._remember(job)
                run.append(i)
            refs.append(ref)
        return refs, run

    @staticmethod
    def fill(refs: Sequence[_Reference], run: Sequence[int], outputs: Sequence[FaceOutput]) -> list[FaceOutput]:
        """Every job's output: the fresh ones for the jobs that ran, the references' for the rest."""
        for i, out in zip(run, outputs, strict=True):
            refs[i].output = out
        return [r.output for r in refs]  # type: ignore[misc]

    def retain(self, face_ids: set[int]) -> None:
        """Forget the faces not in ``face_ids`` (gone from the frame, or the effect is off)."""
        for fid in [f for f in self._refs if f not in face_ids]:
            del self._refs[fid]

    def _match(self, job: FaceJob) -> _Reference | None:
        face = job.face
        ref = self._refs.get(face.face_id)
        landmarks = getattr(face, "landmarks", None)
        if ref is None or landmarks is None or ref.reused >= self.tolerance.refresh:
            return None
        d = np.asarray(landmarks, np.float64)[:, :2] - ref.landmarks
        rms = float(np.sqrt(np.mean(np.sum(d * d, axis=1)))) * _crop_scale(face.transform)
        if rms >= self.tolerance.landmark_px:
            return None
        tol = self.tolerance.au
        if _au_change(face.aus, ref.live) >= tol or _au_change(job.target, ref.target) >= tol:
            return None
        ref.reused += 1
        return ref

    def _remember(self, job: FaceJob) -> _Reference:
        face = job.face
        landmarks = getattr(face, "landmarks", None)
        ref = _Reference(np.zeros((0, 2)) if landmarks is None else np.asarray(landmarks, np.float64)[:, :2].copy(),
                         dict(face.aus), dict(job.target))
        if landmarks is not None:
            self._refs[face.face_id] = ref
        return ref
