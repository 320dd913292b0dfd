"""The ``refine`` network behind an engine: its ONNX graph, ONNX Runtime and PyTorch backends.

The graph has the generator contract's outputs (``attention`` [N,1,S,S] in [0,1], ``color``
[N,3,S,S] in [-1,1]; with a flow head also ``flow`` [N,2,S,S], the residual flow) and one input
more than GANimation's: ``image`` float32 [N,3,S,S] in [-1,1] is the *warped* crop, ``aus`` float32 [N,K] the target AUs and ``geometry`` float32
[N,4,S,S] the maps of rtanim.models.refine.geometry_maps; a net trained with a remembered mouth also
takes ``reference`` float32 [N,4,S,S] (rtanim.models.reference, zeros when nothing is remembered).
Batch is dynamic; metadata names the model,
the AU list and the inputs, so TensorRT (``trtexec --onnx``, or engines.trt_engine on a GPU
machine) builds it like any ONNX file: plain convolutions, no custom ops.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from engines.base import log, physical_cores
from engines.cache import CacheKey, EngineCache
from engines.export import ONNX_OPSET, finish_onnx
from rtanim.errors import InputError
from rtanim.files import staged
from rtanim.models.ganimation import weights_digest
from rtanim.models.refine import RefineNet

INPUTS = ("image", "aus", "geometry")  # + ("reference",) for a net that takes one: RefineSpec.inputs
OUTPUTS = ("attention", "color")  # + ("flow",) for a net with a flow head: RefineSpec.outputs
BACKENDS = ("onnxruntime", "torch")


def refine_digest(net: RefineNet) -> str:
    """sha256 over the architecture and FP32 weights (the generators' digest): the cache identity."""
    return weights_digest(net.state_dict(), net.spec)


def export_refine_onnx(net: RefineNet, path: str | Path, *, opset: int = ONNX_OPSET) -> Path:
    """Write the refine graph (FP32, dynamic batch) with rtanim metadata; atomic."""
    clone = RefineNet(net.spec)
    clone.load_state_dict(net.state_dict())
    clone.eval()
    s, k = net.spec.crop_size, len(net.spec.au_codes)
    dummy = (torch.zeros(2, 3, s, s), torch.full((2, k), 0.5), torch.zeros(2, net.spec.geometry_inputs, s, s))
    if net.spec.n_reference:
        dummy = (*dummy, torch.zeros(2, net.spec.n_reference, s, s))
    inputs = list(net.spec.inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(clone, dummy, str(tmp), dynamo=False, input_names=inputs,
                              output_names=list(net.spec.outputs),
                              dynamic_axes={n: {0: "N"} for n in (*inputs, *net.spec.outputs)},
                              opset_version=opset, do_constant_folding=True)
        finish_onnx(tmp, {"rtanim.model": "refine", "rtanim.au_codes": json.dumps(list(net.spec.au_codes)),
                          "rtanim.inputs": json.dumps(inputs), "rtanim.weights_sha256": refine_digest(net),
                          "rtanim.precision": "fp32"})
    return path


class RefineEngine:
    """Runs the refine network on numpy batches: ``run(image, aus, geometry, reference=None) ->
    (attention, color, flow or None)``; ``reference`` only for a net that takes one (zeros if None)."""

    def __init__(self, net: RefineNet, backend: str = "onnxruntime", *, threads: int | None = None,
                 cache: EngineCache | None = None) -> None:
        if backend not in BACKENDS:
            raise InputError(None, f"the refine model runs on {' or '.join(BACKENDS)}, not {backend!r} "
                                   "(TensorRT: build its ONNX export on a GPU machine)", field="--engine")
        self.net, self.backend = net.eval(), backend
        self.spec = net.spec
        if backend == "onnxruntime":
            import onnxruntime as ort

            from engines.ort_engine import session_options

            cache = cache or EngineCache()
            key = CacheKey("onnx", "refine", refine_digest(net), "fp32",
                           backend_version=f"torch-{torch.__version__.split('+')[0]}", extra=f"opset{ONNX_OPSET}")
            self.path = cache.get_or_build(key, lambda tmp: export_refine_onnx(net, tmp), suffix=".onnx").path
            # One core fewer than the machine has: tracking and compose run beside the network in
            # the pipeline, and on 2 cores two ORT threads spin against them (measured: 27.9 fps
            # offline at 640x360 with 2 threads, 33.9 with 1). RTANIM_REFINE_THREADS overrides.
            threads = threads or int(os.environ.get("RTANIM_REFINE_THREADS", "0")) or max(1, physical_cores() - 1)
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=["CPUExecutionProvider"])
            log.info("onnxruntime: refine %s", self.path.name)

    def run(self, image: np.ndarray, aus: np.ndarray, geometry: np.ndarray, reference: np.ndarray | None = None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        feed = {"image": np.ascontiguousarray(image, np.float32), "aus": np.ascontiguousarray(aus, np.float32),
                "geometry": np.ascontiguousarray(geometry, np.float32)}
        if self.spec.n_reference:
            n, _, h, w = feed["image"].shape
            feed["reference"] = (np.zeros((n, self.spec.n_reference, h, w), np.float32) if reference is None
                                 else np.ascontiguousarray(reference, np.float32))
        if self.backend == "onnxruntime":
            outs = self.session.run(list(self.spec.outputs), feed)
        else:
            with torch.inference_mode():
                outs = [t.numpy() for t in self.net(*(torch.from_numpy(feed[k]) for k in self.spec.inputs))]
        return outs[0], outs[1], outs[2] if len(outs) > 2 else None

    def describe(self) -> str:
        return f"{self.backend} cpu fp32"


def refine_engine(net: RefineNet, engine: str = "auto") -> RefineEngine:
    """``--engine`` for the refine model: auto and onnxruntime -> ONNX Runtime, torch -> PyTorch (CPU)."""
    if engine in ("auto", "onnxruntime"):
        return RefineEngine(net, "onnxruntime")
    return RefineEngine(net, engine)
