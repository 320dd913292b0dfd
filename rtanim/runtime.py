"""``--model`` and ``--engine`` resolved into a pipeline :class:`~rtanim.pipeline.Generator`.

Shared by ``image``, ``video``, ``webcam``, ``bench`` and ``eval`` so every command means the
same thing by a model name: ``warp`` (no network), ``default`` (the shipped GPU model on a
CUDA engine, the shipped lite model otherwise), ``lite``, ``ganimation``, ``lite+flow``,
``ganimation+flow`` or a checkpoint path (.safetensors, or an original GANimation .pth).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

from rtanim.compose import FaceOutput
from rtanim.pipeline import EngineGenerator, FaceJob

log = logging.getLogger("rtanim")

#: Shipped-weight preference for ``default``: GPU engines take the big model, CPUs the lite one.
DEFAULT_GPU = ("ganimation+flow", "ganimation")
DEFAULT_CPU = ("lite+flow", "lite")


class WarpGenerator:
    """The geometric ``warp`` model behind the pipeline's Generator interface."""

    name = "warp"

    def __init__(self, strength: float = 1.0, basis: str | Path | None = None) -> None:
        """``basis``: an AU basis .npz to use instead of the shipped one (eval, calibration)."""
        from rtanim.geometry import AUBasis, WarpModel

        self.model = WarpModel(None if basis is None else AUBasis.load(basis), strength=strength)
        self.au_codes = self.model.codes

    def generate(self, jobs: Sequence[FaceJob]) -> list[FaceOutput]:
        from rtanim.geometry import warp_face

        return [self.model.face_output(warp_face(j.face, j.target)) for j in jobs]

    def describe(self) -> str:
        return "warp (AU -> landmark basis, thin-plate flow; no network)"


class NeuralGenerator(EngineGenerator):
    """A generator network behind one engine."""

    def __init__(self, engine, name: str) -> None:  # noqa: ANN001 - engines.base.Engine, imported lazily
        super().__init__(engine, engine.spec.au_codes)
        self.name = name

    def describe(self) -> str:
        return f"{self.name} on {self.engine.describe()}"


def resolve_default(engine: str, device: str | None) -> str:
    """``default`` -> the shipped model that suits the engine, or ``warp`` when none ships."""
    from rtanim.models import shipped_weights

    gpu = engine == "tensorrt" or (device or "").startswith("cuda")
    if engine == "auto" and device is None:
        import torch

        gpu = torch.cuda.is_available()
    for name in DEFAULT_GPU if gpu else DEFAULT_CPU:
        if shipped_weights(name) is not None:
            return name
    _warn_no_weights()
    return "warp"


@functools.lru_cache(maxsize=1)
def _warn_no_weights() -> None:
    log.warning("no trained weights ship with this build: --model default uses the 'warp' model")


def load_generator(model: str = "default", engine: str = "auto", device: str | None = None, batch: int = 8):
    """The Generator for ``--model``/``--engine`` (InputError for unknown names or missing backends)."""
    from rtanim.errors import InputError

    name = resolve_default(engine, device) if model == "default" else model
    if name == "warp":
        if engine not in ("auto", "torch", "onnxruntime", "tensorrt"):
            raise InputError(None, f"unknown engine {engine!r}", field="--engine")
        return WarpGenerator()
    from rtanim.models import REGISTRY, load_model

    if name not in REGISTRY and not Path(name).exists():
        raise InputError(name, f"no such file or model name (names: warp, {', '.join(REGISTRY)})", field="--model")
    from engines.select import select_engine

    net = load_model(name)
    return NeuralGenerator(select_engine(engine, net, device=device, max_batch=max(batch, 1)), name)
