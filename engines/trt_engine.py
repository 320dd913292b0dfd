"""TensorRT backend: engines built from the ONNX export, cached on disk, run on an explicit stream.

Build: the ONNX parser, an optimisation profile for batch 1..max (opt 8), FP16
(InstanceNorm layers kept in FP32, where FP16 variance loses precision), a
timing cache so rebuilds after a weight change take seconds, and INT8 when a
calibration source from calib/ is given. The cache key holds the weights
digest, TensorRT version, GPU name and precision: any change rebuilds, and the
log says which one changed.

Run: one execution context, device buffers allocated once at the profile's
max batch and bound by address (``set_tensor_address``) once; a call copies
inputs in, sets the input shapes and enqueues ``execute_async_v3`` on its own
CUDA stream, ordered against the caller's stream with stream waits, not syncs.
Device memory and streams come from torch (already a dependency).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from engines.base import Batch, Engine, Outputs
from engines.cache import CacheKey, CacheResult, EngineCache
from engines.export import cached_onnx
from rtanim.errors import InputError, RunError
from rtanim.files import staged, write_bytes
from rtanim.models.ganimation import Generator, ModelSpec, model_digest

PRECISIONS = ("fp32", "fp16", "int8")
OPT_BATCH = 8


def trt_available() -> str | None:
    """None when TensorRT can run here, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install tensorrt; needs an NVIDIA GPU and driver)"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch (TensorRT needs a GPU and a CUDA build of torch)"
    return None


def require_trt() -> None:
    """Stop with one line (exit 2) naming what TensorRT lacks here, before anything imports it."""
    missing = trt_available()
    if missing:
        raise InputError(None, missing, field="--engine")


def trt_version() -> str:
    import tensorrt as trt

    return trt.__version__


def gpu_name(device: int | str | torch.device = 0) -> str:
    return torch.cuda.get_device_name(torch.device("cuda", device) if isinstance(device, int) else device)


def trt_cache_key(
    model: Generator,
    precision: str,
    max_batch: int,
    *,
    version: str | None = None,
    gpu: str | None = None,
    extra: str = "",
) -> CacheKey:
    """The engine's cache key; ``version`` / ``gpu`` are injectable so the logic is testable on a CPU."""
    return CacheKey("tensorrt", model.spec.name, model_digest(model), precision,
                    backend_version=version if version is not None else trt_version(),
                    device=gpu if gpu is not None else gpu_name(), max_batch=max_batch, extra=extra)


def build_serialized(
    onnx_path: Path,
    *,
    precision: str = "fp16",
    max_batch: int = 32,
    timing_cache: Path | None = None,
    calibrator=None,
    workspace: int = 2 << 30,
) -> bytes:
    """ONNX -> serialised TensorRT engine (TensorRT 10 API)."""
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise InputError(None, f"TensorRT precision must be one of {PRECISIONS}", field="--precision")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RunError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        norm = getattr(trt.LayerType, "NORMALIZATION", None)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if norm is not None and layer.type == norm:
                layer.precision = trt.float32
                layer.set_output_type(0, trt.float32)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    opt = min(OPT_BATCH, max_batch)
    # One range for the batch of every input the graph declares (image and aus for generators;
    # image, aus and geometry for the refine model): the other dimensions are the graph's own.
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(int(d) for d in tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (opt, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    blob = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RunError(f"TensorRT engine build failed for {onnx_path} (see the TensorRT log above)")
    if timing_cache is not None:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def engine_for(
    model: Generator,
    *,
    precision: str = "fp16",
    max_batch: int = 32,
    cache: EngineCache | None = None,
    calib: str | Path | None = None,
) -> CacheResult:
    """The cached engine for ``model``, built (and cached) if the key misses."""
    require_trt()
    cache = cache or EngineCache()
    calibrator, extra = None, ""
    if precision == "int8":
        if calib is None:
            raise InputError(None, "INT8 needs calibration data (--calib)", field="--calib")
        from engines.int8 import calibration_source, make_calibrator

        data, cache_file, digest = calibration_source(calib, model.spec.au_codes, cache.root, model.spec.crop_size)
        # Explicit-batch calibration feeds batches of the calibration profile's opt size.
        calibrator = make_calibrator(data, cache_file, batch_size=min(OPT_BATCH, max_batch))
        extra = f"calib={digest}"
    key = trt_cache_key(model, precision, max_batch, extra=extra)
    timing = cache.root / f"timing-{CacheKey('timing', 'all', '', '', key.backend_version, key.device).digest}.cache"

    def build(tmp: Path) -> None:
        onnx_path = cached_onnx(model, cache)
        tmp.write_bytes(build_serialized(onnx_path, precision=precision, max_batch=max_batch,
                                         timing_cache=timing, calibrator=calibrator))

    result = cache.get_or_build(key, build)
    write_sidecar(result.path, model.spec, key)
    return result


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_sidecar(path: Path, spec: ModelSpec, key: CacheKey) -> None:
    side = _sidecar(path)
    if not side.is_file():
        side.write_text(json.dumps({"spec": json.loads(spec.to_json()), "precision": key.precision,
                                    "tensorrt": key.backend_version, "gpu": key.device,
                                    "max_batch": key.max_batch}, indent=1))


def build_engine_file(model: Generator, out: str | Path, *, precision: str = "fp16", max_batch: int = 32,
                      calib: str | Path | None = None) -> str:
    """``rtanim export --format tensorrt``: the engine (via the cache) copied to ``out``, plus ``out.json``."""
    result = engine_for(model, precision=precision, max_batch=max_batch, calib=calib)
    out = Path(out)
    for src, dst in ((result.path, out), (_sidecar(result.path), _sidecar(out))):  # the sidecar last: it says "done"
        with staged(dst) as tmp:
            shutil.copyfile(src, tmp)
    return result.reason


_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT8": torch.int8, "INT32": torch.int32,
           "BOOL": torch.bool}


def bind_buffers(engine, context, device: torch.device, max_batch: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """One device buffer per I/O tensor of a deserialised engine, sized for ``max_batch`` (the
    dynamic batch, -1 in the engine) and bound to ``context`` by address once; in I/O order."""
    buffers: dict[str, torch.Tensor] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = list(engine.get_tensor_shape(name))
        shape[0] = max_batch
        buffers[name] = torch.empty(shape, dtype=_DTYPES[engine.get_tensor_dtype(name).name], device=device)
        context.set_tensor_address(name, buffers[name].data_ptr())
    return buffers


class TrtEngine(Engine):
    backend = "tensorrt"

    def __init__(
        self,
        source: Generator | str | Path,
        device: str | torch.device = "cuda",
        *,
        precision: str = "fp16",
        max_batch: int = 32,
        cache: EngineCache | None = None,
        calib: str | Path | None = None,
    ) -> None:
        require_trt()
        import tensorrt as trt

        dev = torch.device(device)
        self.dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        self.device = str(self.dev)
        if isinstance(source, Generator):
            result = engine_for(source, precision=precision, max_batch=max_batch, cache=cache, calib=calib)
            path, self.spec, self.precision, self.note = result.path, source.spec, precision, result.reason
        else:
            path = Path(source)
            side = _sidecar(path)
            if not side.is_file():
                raise InputError(path, f"no {side.name} beside the engine (write engines with rtanim export)")
            meta = json.loads(side.read_text())
            self.spec, self.precision, self.note = ModelSpec.from_json(meta["spec"]), meta["precision"], ""
            here = (trt_version(), gpu_name(self.dev))
            if (meta["tensorrt"], meta["gpu"]) != here:
                raise InputError(path, f"built for TensorRT {meta['tensorrt']} on {meta['gpu']}, this is "
                                       f"{here[0]} on {here[1]}: export it again")
        with torch.cuda.device(self.dev):
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise RunError(f"TensorRT could not deserialise {path} (built by another version?)")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.dev)
            self.max_batch = int(self.engine.get_tensor_profile_shape("image", 0)[2][0])
            self.buffers = bind_buffers(self.engine, self.context, self.dev, self.max_batch)
            self.names = list(self.buffers)
        self.path = path
        self.outputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _run(self, batch: Batch) -> Outputs:
        image = batch.image if batch.torch_in else torch.from_numpy(batch.image)
        aus = batch.aus if batch.torch_in else torch.from_numpy(batch.aus)
        n = int(image.shape[0])
        caller = torch.cuda.current_stream(self.dev)
        self.stream.wait_stream(caller)  # inputs produced on the caller's stream are ready
        with torch.cuda.device(self.dev), torch.cuda.stream(self.stream):
            self.buffers["image"][:n].copy_(image, non_blocking=True)
            self.buffers["aus"][:n].copy_(aus, non_blocking=True)
            self.context.set_input_shape("image", tuple(self.buffers["image"][:n].shape))
            self.context.set_input_shape("aus", tuple(self.buffers["aus"][:n].shape))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RunError("TensorRT execute_async_v3 failed")
            out = {name: self.buffers[name][:n].float().clone() for name in self.outputs}
        caller.wait_stream(self.stream)  # results are ready before the caller's next kernel
        for t in out.values():
            t.record_stream(caller)
        return Outputs(out["attention"], out["color"], out.get("flow"))

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.buffers.clear()
