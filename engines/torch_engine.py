"""PyTorch backend: the FP32 reference on the CPU; FP16 + channels_last + CUDA Graphs on a GPU.

A generator call at batch 1 is dozens of small kernels, so on a GPU the launch
overhead rivals the maths; capturing one CUDA Graph per batch size in use and
replaying it removes that. Graphs need fixed addresses, so each size owns static
input/output buffers (copied in and cloned out).
"""

from __future__ import annotations

import torch

from engines.base import Batch, Engine, Outputs, log, physical_cores
from rtanim.models.ganimation import Generator


class _Graph:
    """One captured forward for one batch size, with its static buffers."""

    def __init__(self, model: Generator, image: torch.Tensor, aus: torch.Tensor) -> None:
        self.image, self.aus = image.clone(), aus.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the capture (cuDNN autotuning, allocations)
            for _ in range(3):
                model(self.image, self.aus)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = model(self.image, self.aus)

    def __call__(self, image: torch.Tensor, aus: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.image.copy_(image)
        self.aus.copy_(aus)
        self.graph.replay()
        return tuple(o.clone() for o in self.outputs)


class TorchEngine(Engine):
    backend = "torch"

    def __init__(
        self,
        model: Generator,
        device: str | torch.device = "cpu",
        *,
        precision: str | None = None,
        channels_last: bool | None = None,
        cuda_graphs: bool = True,
        threads: int | None = None,
    ) -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch engine: CUDA requested but torch.cuda.is_available() is False")
        self.spec = model.spec
        self.device = str(dev)
        self.precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"torch engine runs fp32 or fp16, not {self.precision}")
        if self.precision == "fp16" and dev.type != "cuda":
            raise ValueError("torch engine: fp16 needs CUDA (CPU FP16 convolutions are slow and inexact)")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        # channels_last suits Tensor Cores; on the CPU oneDNN measured no better (see engines/bench.py).
        self.channels_last = dev.type == "cuda" if channels_last is None else channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = _copy(model).to(dev, self.dtype, memory_format=self.memory_format).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.use_graphs = cuda_graphs and dev.type == "cuda"
        self._graphs: dict[int, _Graph] = {}
        if dev.type == "cpu" and threads is not None:
            torch.set_num_threads(threads)
        elif dev.type == "cpu" and torch.get_num_threads() > physical_cores():
            torch.set_num_threads(physical_cores())
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _run(self, batch: Batch) -> Outputs:
        dev = torch.device(self.device)
        image = batch.image if batch.torch_in else torch.from_numpy(batch.image)
        aus = batch.aus if batch.torch_in else torch.from_numpy(batch.aus)
        image = image.to(dev, self.dtype, non_blocking=True).contiguous(memory_format=self.memory_format)
        aus = aus.to(dev, self.dtype, non_blocking=True)
        with torch.inference_mode():
            if self.use_graphs:
                n = int(image.shape[0])
                if n not in self._graphs:
                    log.info("torch engine: capturing a CUDA graph for batch %d", n)
                    self._graphs[n] = _Graph(self.model, image, aus)
                out = self._graphs[n](image, aus)
            else:
                out = self.model(image, aus)
        out = tuple(o.float().contiguous() for o in out)
        return Outputs(out[0], out[1], out[2] if self.spec.flow else None)

    def close(self) -> None:
        self._graphs.clear()


def _copy(model: Generator) -> Generator:
    """A private copy, so casting to FP16 / channels_last never changes the caller's model."""
    clone = type(model)(model.spec)
    clone.load_state_dict(model.state_dict())
    clone.fast = model.fast
    return clone
