"""The ``refine`` network behind an engine: its ONNX graph; ONNX Runtime, PyTorch and TensorRT backends.

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
from rtanim.errors import InputError, RunError
from rtanim.files import staged
from rtanim.models.ganimation import weights_digest
from rtanim.models.refine import RefineNet

INPUTS = ("image", "aus", "geometry")  # + ("reference",) for a net that takes one: RefineSpec.inputs
OUTPUTS = ("attention", "color")  # + ("flow",) for a net with a flow head: RefineSpec.outputs
BACKENDS = ("onnxruntime", "torch", "tensorrt")


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
    (attention, color, flow or None)``; ``reference`` only for a net that takes one (zeros if None).

    Backends: ``onnxruntime`` (CPU, FP32), ``torch`` (FP32 on the CPU, FP16 on a CUDA device) and
    ``tensorrt`` (an FP16 engine built from the ONNX export on the GPU it runs on, cached on disk).
    """

    def __init__(self, net: RefineNet, backend: str = "onnxruntime", *, device: str | None = None,
                 threads: int | None = None, cache: EngineCache | None = None, max_batch: int = 8) -> None:
        if backend not in BACKENDS:
            raise InputError(None, f"the refine model runs on {', '.join(BACKENDS)}, not {backend!r}", field="--engine")
        self.net, self.backend = net.eval(), backend
        self.spec = net.spec
        self.device, self.precision = "cpu", "fp32"
        cache = cache or EngineCache()
        if backend == "torch":
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            if self.device.startswith("cuda"):
                if not torch.cuda.is_available():
                    raise InputError(None, "CUDA requested but torch.cuda.is_available() is False", field="--device")
                self.precision = "fp16"  # checked against FP32: tests/test_refine_engines.py, on a GPU
                self.net = _copy(net).to(self.device, torch.float16)
        elif backend == "onnxruntime":
            if device is not None and not device.startswith("cpu"):
                raise InputError(None, f"the refine model runs ONNX Runtime on the CPU, not {device}", field="--device")
            import onnxruntime as ort

            from engines.ort_engine import session_options

            self.path = self._onnx(cache)
            # One core fewer than the machine has: tracking and compose run beside the network in
            # the pipeline, and on 2 cores two ORT threads spin against them (measured: 27.9 fps
            # offline at 640x360 with 2 threads, 33.9 with 1). RTANIM_REFINE_THREADS overrides.
            threads = threads or int(os.environ.get("RTANIM_REFINE_THREADS", "0")) or max(1, physical_cores() - 1)
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=["CPUExecutionProvider"])
            log.info("onnxruntime: refine %s", self.path.name)
        else:
            from engines.trt_engine import require_trt

            require_trt()
            self.device, self.precision = device or "cuda", "fp16"
            self.trt = _TrtRefine(self._onnx(cache), net.spec, self.device, max_batch, cache, refine_digest(net))

    def _onnx(self, cache: EngineCache) -> Path:
        key = CacheKey("onnx", "refine", refine_digest(self.net), "fp32",
                       backend_version=f"torch-{torch.__version__.split('+')[0]}", extra=f"opset{ONNX_OPSET}")
        return cache.get_or_build(key, lambda tmp: export_refine_onnx(self.net, tmp), suffix=".onnx").path

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
        elif self.backend == "tensorrt":
            outs = self.trt.run(feed)
        else:
            dtype = torch.float16 if self.precision == "fp16" else torch.float32
            with torch.inference_mode():
                got = self.net(*(torch.from_numpy(feed[k]).to(self.device, dtype) for k in self.spec.inputs))
                outs = [t.float().cpu().numpy() for t in got]
        return outs[0], outs[1], outs[2] if len(outs) > 2 else None

    def describe(self) -> str:
        return f"{self.backend} {self.device} {self.precision}"


def _copy(net: RefineNet) -> RefineNet:
    """A private copy, so casting to FP16 on a GPU never changes the caller's net."""
    clone = RefineNet(net.spec)
    clone.load_state_dict(net.state_dict())
    return clone.eval()


class _TrtRefine:
    """The refine graph as a TensorRT FP16 engine: built once per weights, TensorRT version and GPU
    (engines.cache), buffers at the profile's largest batch bound once, one stream."""

    def __init__(self, onnx_path: Path, spec, device: str, max_batch: int, cache: EngineCache,  # noqa: ANN001
                 digest: str) -> None:
        import tensorrt as trt

        from engines.trt_engine import bind_buffers, build_serialized, gpu_name, trt_version

        self.dev = torch.device(device if ":" in device else "cuda:0")
        key = CacheKey("tensorrt", "refine", digest, "fp16", backend_version=trt_version(),
                       device=gpu_name(self.dev), max_batch=max_batch)

        def build(tmp: Path) -> None:
            tmp.write_bytes(build_serialized(onnx_path, precision="fp16", max_batch=max_batch))

        path = cache.get_or_build(key, build, suffix=".engine").path
        self.spec, self.max_batch = spec, max_batch
        with torch.cuda.device(self.dev):
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.dev)
            self.buffers = bind_buffers(self.engine, self.context, self.dev, max_batch)
        log.info("tensorrt: refine %s", path.name)

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(feed["image"])
        if n > self.max_batch:  # the profile's limit: run in slices
            parts = [self.run({k: v[i:i + self.max_batch] for k, v in feed.items()}) for i in range(0, n, self.max_batch)]
            return [np.concatenate(p) for p in zip(*parts, strict=True)]
        with torch.cuda.device(self.dev), torch.cuda.stream(self.stream):
            for name in self.spec.inputs:
                self.buffers[name][:n].copy_(torch.from_numpy(feed[name]), non_blocking=False)
                self.context.set_input_shape(name, tuple(self.buffers[name][:n].shape))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RunError("TensorRT execute_async_v3 failed (refine)")
            outs = [self.buffers[name][:n].float().cpu().numpy() for name in self.spec.outputs]
        return outs


def refine_engine(net: RefineNet, engine: str = "auto", device: str | None = None) -> RefineEngine:
    """``--engine`` for the refine model. ``auto``: TensorRT where it can run, else FP16 PyTorch on a
    CUDA device, else ONNX Runtime on the CPU (``--device cpu`` keeps it there); ``onnxruntime``,
    ``torch`` and ``tensorrt`` as asked (one line and exit 2 where it cannot run)."""
    on_cpu = device is not None and device.startswith("cpu")
    if engine == "auto":
        from engines.trt_engine import trt_available

        if not on_cpu and trt_available() is None:
            return RefineEngine(net, "tensorrt", device=device)
        if not on_cpu and torch.cuda.is_available():
            return RefineEngine(net, "torch", device=device or "cuda")
        return RefineEngine(net, "onnxruntime")
    return RefineEngine(net, engine, device=device)
