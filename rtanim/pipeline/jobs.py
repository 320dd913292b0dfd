"""The data at the pipeline's stage boundaries, and the protocols of what plugs into it.

Read this before :mod:`rtanim.pipeline.graph`: a :class:`FrameJob` carries one captured frame from
the track stage through generate and compose to the sinks, with a :class:`FaceJob` per face; a
:class:`Tracker` finds the faces, a :class:`Target` says which AUs each should show, and a
:class:`Generator` paints them (docs/ARCHITECTURE.md, "Data flow").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # annotations only: the command line imports this module before any heavy one
    from rtanim.face.compose import FaceOutput
    from rtanim.face.tracking import Face
    from rtanim.io.source_base import Frame




@dataclass
class FaceJob:
    """A face on its way through the generator."""

    face: Face
    crop: np.ndarray  # S x S x 3 uint8 RGB
    target: dict[str, float]  # resolved target AUs (timeline + live face)


@dataclass
class FrameJob:
    frame: Frame
    faces: list[FaceJob] = field(default_factory=list)
    outputs: list[FaceOutput] = field(default_factory=list)
    effect: bool = True
    found: int = 0  # faces tracked (also when the effect is off)


class Tracker(Protocol):
    """What the pipeline needs from :class:`rtanim.face.tracking.FaceTracker` (one per stream, one thread)."""

    def track(self, rgb: np.ndarray, pts: float | None = None) -> list[Face]: ...


class Target(Protocol):
    """Where target AUs come from: a :class:`~rtanim.expression.timeline.Timeline`, or the live control panel's state."""

    def at(self, t: float, live: Any = None) -> dict[str, float]: ...


class Generator(Protocol):
    """Turns face jobs into crop-resolution outputs; neural engines and the `warp` model alike.

    What :func:`rtanim.pipeline.generators.load_generator` returns. The pipeline itself calls only
    ``generate``; a minimal generator (a test's, a plug-in's) may leave out the other three, and
    :func:`describe` and :func:`forget_faces` stand in for them.
    """

    au_codes: Sequence[str]

    def generate(self, jobs: Sequence[FaceJob]) -> list[FaceOutput]:
        """Outputs for ``jobs``, one per job, in order."""
        ...

    def describe(self) -> str:
        """One line for logs and reports: the model, its weights and the engine it runs on."""
        ...

    def remember(self, job: FaceJob) -> None:
        """See a face before it is generated (a net with a mouth reference keeps its widest-open mouth)."""
        ...

    def forget(self) -> None:
        """Drop every remembered face: the next photo or clip is other people."""
        ...


class GeneratorBase:
    """The Generator extras for a generator that remembers nothing: subclass and override what applies."""

    def describe(self) -> str:
        return type(self).__name__

    def remember(self, job: FaceJob) -> None:
        pass

    def forget(self) -> None:
        pass


def describe_generator(gen: Generator) -> str:
    """``gen.describe()``, or the class name of a minimal generator that has none."""
    return gen.describe() if hasattr(gen, "describe") else type(gen).__name__


def forget_faces(gen: Generator) -> None:
    """Start ``gen`` afresh for another photo or clip: a generator that remembers faces by id
    (rtanim.models.reference) must not show one person what another's face looked like; a minimal
    generator without ``forget`` remembers nothing."""
    if hasattr(gen, "forget"):
        gen.forget()
