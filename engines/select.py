"""Pick an engine: ``auto`` prefers TensorRT > PyTorch CUDA > ONNX Runtime CPU, and says why.

An explicitly requested backend that cannot run here is an :class:`InputError`
(exit 2, one line), never a silent fallback: a user who asked for TensorRT and
got the CPU would misread every number that follows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engines.base import Engine, log
from engines.cache import EngineCache
from rtanim.errors import InputError
from rtanim.models.ganimation import Generator, load_model

BACKENDS = ("tensorrt", "torch", "onnxruntime")
CHOICES = ("auto", *BACKENDS)


def backend_status(device: str | None = None) -> dict[str, str | None]:
    """Each backend -> None if it can run here (on ``device``), else the reason it cannot."""
    from engines.ort_engine import ort_available
    from engines.trt_engine import trt_available

    cuda_wanted = device is not None and str(device).startswith("cuda")
    status = {
        "tensorrt": trt_available(),
        "torch": "CUDA requested but not available" if cuda_wanted and not torch.cuda.is_available() else None,
        "onnxruntime": ort_available(),
    }
    if device is not None and not cuda_wanted:
        status["tensorrt"] = status["tensorrt"] or f"TensorRT runs on CUDA devices, not {device}"
    return status


def _model(model: Generator | str | Path) -> Generator:
    return model if isinstance(model, Generator) else load_model(model)


def select_engine(
    kind: str = "auto",
    model: Generator | str | Path = "default",
    *,
    device: str | None = None,
    precision: str | None = None,
    max_batch: int = 32,
    cache: EngineCache | None = None,
) -> Engine:
    """An engine for ``model`` (a Generator, registry name or checkpoint path).

    ``device`` None means "the best here": CUDA when available (except for onnxruntime, whose
    default is the CPU). ``precision`` None means the backend's default (fp16 on GPUs, fp32 on CPUs).
    """
    if kind not in CHOICES:
        raise InputError(None, f"unknown engine {kind!r} (choose {', '.join(CHOICES)})", field="--engine")
    status = backend_status(device)
    if kind == "auto":
        kind, why = _auto(status, device)
        log.info("engine auto: %s (%s)", kind, why)
    elif status[kind]:
        raise InputError(None, f"{kind} is not available: {status[kind]}", field="--engine")
    net = _model(model)
    if kind == "tensorrt":
        from engines.trt_engine import TrtEngine

        return TrtEngine(net, device or "cuda", precision=precision or "fp16", max_batch=max_batch, cache=cache)
    if kind == "torch":
        from engines.torch_engine import TorchEngine

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return TorchEngine(net, dev, precision=precision)
    from engines.ort_engine import OrtEngine

    if precision not in (None, "fp32"):
        raise InputError(None, f"the onnxruntime engine runs fp32, not {precision}", field="--precision")
    return OrtEngine(net, device or "cpu", cache=cache)


def _auto(status: dict[str, str | None], device: str | None) -> tuple[str, str]:
    if status["tensorrt"] is None:
        return "tensorrt", f"TensorRT and CUDA ({torch.cuda.get_device_name()}) are available"
    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        return "torch", f"CUDA is available but TensorRT is not ({status['tensorrt']})"
    if status["onnxruntime"] is None:
        return "onnxruntime", "no CUDA device: ONNX Runtime is the fastest CPU path"
    return "torch", f"no CUDA device and {status['onnxruntime']}"
