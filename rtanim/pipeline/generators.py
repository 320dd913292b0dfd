"""``--model`` and ``--engine`` resolved into a pipeline :class:`~rtanim.pipeline.jobs.Generator`.

Shared by ``image``, ``video``, ``webcam``, ``bench`` and ``eval`` so every command means the
same thing by a model name: ``warp`` (no network), ``default`` (the shipped ``refine`` model on
every engine, warp where none ships), ``lite``, ``ganimation``, ``lite+flow``,
``ganimation+flow`` or a checkpoint path (.safetensors, or an original GANimation .pth).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtanim.expression.aus import to_vector
from rtanim.face.compose import FaceOutput, unbatch
from rtanim.pipeline.jobs import FaceJob, Generator, GeneratorBase

log = logging.getLogger("rtanim")

#: Shipped-weight preference for ``default``: the refiner everywhere it ships (FP16 on CUDA, a
#: TensorRT FP16 engine where TensorRT runs), then the GANimation models.
DEFAULT_GPU = ("refine", "ganimation+flow", "ganimation")
DEFAULT_CPU = ("refine", "lite+flow", "lite")


class EngineGenerator(GeneratorBase):
    """Adapts an engine (``run(crops, aus) -> Outputs``) to the pipeline: one batched call."""

    def __init__(self, engine: Any, au_codes: Sequence[str]) -> None:
        self.engine, self.au_codes = engine, tuple(au_codes)

    def generate(self, jobs: Sequence[FaceJob]) -> list[FaceOutput]:
        if not jobs:
            return []
        crops = np.stack([j.crop for j in jobs])
        aus = np.stack([to_vector(j.target, self.au_codes) for j in jobs])
        return unbatch(self.engine.run(crops, aus))


class WarpGenerator(GeneratorBase):
    """The geometric ``warp`` model behind the pipeline's Generator interface."""

    name = "warp"

    def __init__(self, strength: float = 1.0, basis: str | Path | None = None) -> None:
        """``basis``: an AU basis .npz to use instead of the shipped one (eval, calibration)."""
        from rtanim.models.geometry import AUBasis, WarpModel

        self.model = WarpModel(None if basis is None else AUBasis.load(basis), strength=strength)
        self.au_codes = self.model.codes

    def generate(self, jobs: Sequence[FaceJob]) -> list[FaceOutput]:
        from rtanim.models.geometry import warp_face

        return [self.model.face_output(warp_face(j.face, j.target)) for j in jobs]

    def describe(self) -> str:
        return "warp (AU -> landmark basis, thin-plate flow; no network)"


class RefineGenerator(GeneratorBase):
    """The ``refine`` model: ``warp``'s flow moves the pixels, the network paints what it cannot.

    Per face: the warp model's flow and target landmarks for live -> target AUs, the crop
    resampled by that flow, the geometry maps (rtanim.models.refine.geometry_maps); one batched network
    call gives A and C (and a residual flow, composed with the warp's); compose applies the flow at
    full resolution. A net trained with a remembered mouth (rtanim.models.reference) is also shown the
    widest-open mouth seen so far of each tracked face: every face that passes is remembered
    (:meth:`remember`), before it is generated, so a run learns the person's teeth as it goes.
    """

    name = "refine"

    def __init__(self, weights: str | Path, engine: str = "auto", device: str | None = None) -> None:
        from engines.refine_engine import refine_engine
        from rtanim.models.refine import load_refine

        net, self.extras = load_refine(weights)
        self.weights = Path(weights)
        self.engine = refine_engine(net, engine, device)
        self.au_codes = net.spec.au_codes
        self.own_mouth = net.spec.paint_keep_stretch > 0  # a fifth geometry channel (rtanim.models.refine)
        self.warp = net.spec.warp_model()
        self.lids = net.spec.lids  # closed lids painted after the network (rtanim.models.lids)
        self.memory = None
        if net.spec.n_reference:
            from rtanim.models.reference import MouthMemory

            self.memory = MouthMemory()

    def remember(self, job: FaceJob) -> None:
        """Let the model see this face as it is now (its widest-open mouth is kept as the reference)."""
        if self.memory is not None:
            self.memory.observe(job.face.face_id, job.crop, job.face.transform.to_crop(job.face.landmarks)[:, :2])

    def forget(self) -> None:
        """Start a new run: another photo or clip may reuse face ids for other people."""
        if self.memory is not None:
            self.memory.clear()

    def inputs(self, job: FaceJob) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                                            np.ndarray]:
        """(warped crop [3,S,S] in [-1,1], geometry [4,S,S], AUs [K], flow [2,S,S], reference [4,S,S] or
        None, target landmarks N x 2 in crop px) for one face."""
        from rtanim.expression.aus import to_vector
        from rtanim.models.geometry import warp_face
        from rtanim.models.refine import warp_inputs

        wf = warp_face(job.face, job.target)
        warped, geometry, flow, target = warp_inputs(self.warp, job.crop, wf.landmarks, wf.live_aus, wf.target_aus,
                                                       own_mouth=self.own_mouth)
        image = warped.transpose(2, 0, 1).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        reference = None
        if self.memory is not None:
            from rtanim.models.reference import reference_maps

            seen = self.memory.get(job.face.face_id)
            reference = reference_maps(seen and seen.crop, seen and seen.landmarks, target, job.crop.shape[0])
        return image, geometry, to_vector(job.target, self.au_codes), flow, reference, target

    def generate(self, jobs: Sequence[FaceJob]) -> list[FaceOutput]:
        if not jobs:
            return []
        for j in jobs:
            self.remember(j)
        items = [self.inputs(j) for j in jobs]
        from rtanim.models.refine import compose_flows

        refs = None if self.memory is None else np.stack([i[4] for i in items])
        att, col, residual = self.engine.run(np.stack([i[0] for i in items]), np.stack([i[2] for i in items]),
                                             np.stack([i[1] for i in items]), refs)
        flows = [i[3] if residual is None else compose_flows(i[3], residual[k]) for k, i in enumerate(items)]
        if self.lids:
            from rtanim.expression.aus import resolve
            from rtanim.models.lids import lid_layer, paint_lids

            att, col = att.copy(), col.copy()
            for k, (job, item) in enumerate(zip(jobs, items, strict=True)):
                shut = (resolve(job.target, "AU45R"), resolve(job.target, "AU45L"))  # EYE_A is the face's right
                lids = lid_layer(job.crop, job.face.transform.to_crop(job.face.landmarks), item[5], flows[k], shut)
                if lids is not None:
                    att[k], col[k] = paint_lids(att[k], col[k], lids)
        # colour over the warped crop: compose keeps the frame's own detail under the paint
        return [FaceOutput(att[k], col[k], flows[k], color_base=items[k][0]) for k in range(len(jobs))]

    def describe(self) -> str:
        steps = self.extras.get("training", {}).get("steps", "?")
        return f"refine ({self.weights.name}, {steps} training steps) on {self.engine.describe()}"


class NeuralGenerator(EngineGenerator):
    """A generator network behind one engine."""

    def __init__(self, engine, name: str) -> None:  # noqa: ANN001 - engines.base.Engine, imported lazily
        super().__init__(engine, engine.spec.au_codes)
        self.name = name

    def describe(self) -> str:
        return f"{self.name} on {self.engine.describe()}"


def resolve_default(engine: str, device: str | None) -> str:
    """``default`` -> the shipped model that suits the engine, or ``warp`` when none ships."""
    from rtanim.models.ganimation import shipped_weights

    gpu = engine == "tensorrt" or (device or "").startswith("cuda")
    if engine == "auto" and device is None:
        import torch

        gpu = torch.cuda.is_available()
    from rtanim.models.refine import shipped_refine

    for name in DEFAULT_GPU if gpu else DEFAULT_CPU:
        if (shipped_refine() if name == "refine" else shipped_weights(name)) is not None:
            return name
    _warn_no_weights()
    return "warp"


@functools.lru_cache(maxsize=1)
def _warn_no_weights() -> None:
    log.warning("no trained weights ship with this build: --model default uses the 'warp' model")


def load_generator(model: str = "default", engine: str = "auto", device: str | None = None,
                   batch: int = 8) -> Generator:
    """The Generator for ``--model``/``--engine`` (InputError for unknown names or missing backends)."""
    from rtanim.errors import InputError

    name = resolve_default(engine, device) if model == "default" else model
    if name == "warp":
        if engine not in ("auto", "torch", "onnxruntime", "tensorrt"):
            raise InputError(None, f"unknown engine {engine!r}", field="--engine")
        return WarpGenerator()
    from rtanim.models.ganimation import REGISTRY, load_model
    from rtanim.models.refine import is_refine_checkpoint, shipped_refine

    if name == "refine":
        weights = shipped_refine()
        if weights is None:
            raise InputError(name, "no refine weights ship with this build yet; pass a refine checkpoint path "
                                   "(e.g. train/init/refine.safetensors)", field="--model")
        return RefineGenerator(weights, engine, device)
    if name not in REGISTRY and not Path(name).exists():
        raise InputError(name, f"no such file or model name (names: warp, refine, {', '.join(REGISTRY)})",
                         field="--model")
    if Path(name).is_file() and is_refine_checkpoint(name):
        return RefineGenerator(name, engine, device)
    from engines.select import select_engine

    net = load_model(name)
    return NeuralGenerator(select_engine(engine, net, device=device, max_batch=max(batch, 1)), name)
