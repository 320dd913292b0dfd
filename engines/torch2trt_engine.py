"""Optional alternative TensorRT builder: NVIDIA-AI-IOT torch2trt (converts the module, no ONNX).

torch2trt is not on PyPI. Install it from source, in the environment that has
tensorrt and a CUDA build of torch::

    git clone https://github.com/NVIDIA-AI-IOT/torch2trt && cd torch2trt && pip install .

Only the build differs: the serialised engine (same I/O names as the ONNX
contract) goes to the same cache and runs in :class:`engines.trt_engine.TrtEngine`,
so nothing is unpickled and the runtime path is shared.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engines.cache import CacheResult, EngineCache
from engines.trt_engine import TrtEngine, trt_available, trt_cache_key, write_sidecar
from rtanim.errors import InputError
from rtanim.models.ganimation import Generator


def torch2trt_available() -> str | None:
    missing = trt_available()
    if missing:
        return missing
    try:
        import torch2trt  # noqa: F401
    except ImportError:
        return "torch2trt is not installed (not on PyPI: see engines/torch2trt_engine.py)"
    return None


def build_with_torch2trt(model: Generator, *, precision: str = "fp16", max_batch: int = 32,
                         cache: EngineCache | None = None) -> CacheResult:
    missing = torch2trt_available()
    if missing:
        raise InputError(None, missing, field="--engine")
    if precision not in ("fp32", "fp16"):
        raise InputError(None, "the torch2trt builder does fp32 or fp16", field="--precision")
    from torch2trt import torch2trt

    cache = cache or EngineCache()
    key = trt_cache_key(model, precision, max_batch, extra="builder=torch2trt")

    def build(tmp: Path) -> None:
        net = Generator(model.spec).cuda().eval()
        net.load_state_dict(model.state_dict())
        net.fast = False  # the literal layers: every op has a torch2trt converter
        s, k = model.spec.crop_size, model.spec.n_aus
        image, aus = torch.zeros(1, 3, s, s, device="cuda"), torch.zeros(1, k, device="cuda")
        converted = torch2trt(
            net, [image, aus], input_names=["image", "aus"], output_names=list(model.spec.outputs),
            fp16_mode=precision == "fp16", max_batch_size=max_batch,
            min_shapes=[(1, 3, s, s), (1, k)], max_shapes=[(max_batch, 3, s, s), (max_batch, k)],
            opt_shapes=[(min(8, max_batch), 3, s, s), (min(8, max_batch), k)],
        )
        tmp.write_bytes(bytes(converted.engine.serialize()))

    result = cache.get_or_build(key, build)
    write_sidecar(result.path, model.spec, key)
    return result


def torch2trt_engine(model: Generator, *, precision: str = "fp16", max_batch: int = 32,
                     cache: EngineCache | None = None) -> TrtEngine:
    """A :class:`TrtEngine` over an engine built by torch2trt."""
    result = build_with_torch2trt(model, precision=precision, max_batch=max_batch, cache=cache)
    engine = TrtEngine(result.path)
    engine.note = result.reason
    return engine
