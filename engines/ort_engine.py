"""ONNX Runtime backend: the CPU path (and CUDA / TensorRT execution providers when installed).

Threads: intra-op = physical cores (SMT siblings only contend for the same FMA
units), inter-op 1 with sequential execution, since the generator is one chain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engines.base import Batch, Engine, Outputs, log, physical_cores
from engines.cache import EngineCache
from engines.export import cached_onnx, read_onnx_metadata, spec_from_onnx_metadata
from rtanim.errors import InputError
from rtanim.models.ganimation import Generator

GRAPH_LEVELS = ("disable", "basic", "extended", "all")


def ort_available() -> str | None:
    """None when onnxruntime imports, else why not."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def session_options(threads: int | None = None, graph_level: str = "all"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_level]
    so.log_severity_level = 3
    return so


def providers_for(device: str, tensorrt_ep: bool = False) -> list:
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        wanted = (["TensorrtExecutionProvider"] if tensorrt_ep else []) + ["CUDAExecutionProvider"]
        chosen = [(p, {"device_id": index}) for p in wanted if p in have]
        if not chosen:
            raise InputError(None, "onnxruntime has no CUDA execution provider here "
                                   "(pip install onnxruntime-gpu)", field="--engine")
        return chosen + ["CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(
        self,
        source: Generator | str | Path,
        device: str = "cpu",
        *,
        threads: int | None = None,
        graph_level: str = "all",
        tensorrt_ep: bool = False,
        cache: EngineCache | None = None,
    ) -> None:
        import onnxruntime as ort

        path = cached_onnx(source, cache) if isinstance(source, Generator) else Path(source)
        meta = read_onnx_metadata(path)
        self.spec = spec_from_onnx_metadata(meta, path)
        self.precision = meta.get("rtanim.precision", "fp32")
        self.device = str(device)
        self.path = path
        self.session = ort.InferenceSession(str(path), session_options(threads, graph_level),
                                            providers=providers_for(self.device, tensorrt_ep))
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("onnxruntime: %s on %s", path.name, self.session.get_providers()[0])

    def _run(self, batch: Batch) -> Outputs:
        if batch.torch_in and batch.image.is_cuda and self.device.startswith("cuda"):
            return self._run_cuda(batch.image, batch.aus)
        image, aus = batch.image, batch.aus
        if batch.torch_in:  # CPU tensors share memory with numpy; CUDA tensors on a CPU session go via host
            image, aus = image.detach().cpu().numpy(), aus.detach().cpu().numpy()
        out = self.session.run(self.output_names, {"image": image, "aus": aus})
        return self._outputs(dict(zip(self.output_names, out, strict=True)))

    def _run_cuda(self, image: torch.Tensor, aus: torch.Tensor) -> Outputs:
        """Zero-copy on the GPU: bind the caller's tensors and torch-allocated outputs by address."""
        n, s = int(image.shape[0]), self.spec.crop_size
        index = image.device.index or 0
        binding = self.session.io_binding()
        for name, t in (("image", image), ("aus", aus)):
            binding.bind_input(name, "cuda", index, np.float32, list(t.shape), t.data_ptr())
        channels = {"attention": 1, "color": 3, "flow": 2}
        outs = {name: torch.empty((n, channels[name], s, s), device=image.device) for name in self.output_names}
        for name, t in outs.items():
            binding.bind_output(name, "cuda", index, np.float32, list(t.shape), t.data_ptr())
        torch.cuda.current_stream(image.device).synchronize()  # ORT runs on its own stream
        self.session.run_with_iobinding(binding)
        return self._outputs(outs)

    def _outputs(self, out: dict) -> Outputs:
        return Outputs(out["attention"], out["color"], out.get("flow"))

    def close(self) -> None:
        self.session = None
