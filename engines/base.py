"""The one engine interface: ``engine.run(crops, aus) -> Outputs`` on batches.

Every backend takes the same inputs - crops as uint8 NHWC / NCHW or float [-1,1]
NCHW, numpy arrays or torch tensors (CPU or CUDA), with AUs [N,K] or [K] - and
returns the I/O contract's tensors in the input's kind: numpy in, numpy out;
torch in, torch out on the input's device (float32 unless noted).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtanim.models.ganimation import ModelSpec

log = logging.getLogger("rtanim.engines")

Array = np.ndarray | torch.Tensor


@dataclass
class Outputs:
    """One batch of generator outputs (the I/O contract): A [N,1,H,W] in [0,1], C [N,3,H,W] in [-1,1],
    F [N,2,H,W] normalised backward offsets (flow models only)."""

    attention: Array
    color: Array
    flow: Array | None = None

    def __len__(self) -> int:
        return int(self.attention.shape[0])

    def numpy(self) -> Outputs:
        conv = (lambda t: t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else t)  # noqa: E731
        return Outputs(conv(self.attention), conv(self.color), None if self.flow is None else conv(self.flow))


@dataclass
class Batch:
    """Inputs normalised for a backend: float [-1,1] NCHW image and float AUs [N,K], same kind and device."""

    image: Array
    aus: Array
    torch_in: bool  # the caller passed torch tensors: answer with torch tensors
    device: torch.device | None  # the caller's device when torch_in


def _is_nhwc(shape: tuple[int, ...], size: int) -> bool:
    if shape[1:] == (size, size, 3):
        return True
    if shape[1:] == (3, size, size):
        return False
    raise ValueError(f"crops must be [N,{size},{size},3] or [N,3,{size},{size}], got {list(shape)}")


def prepare(crops: Any, aus: Any, spec: ModelSpec) -> Batch:
    """Validate and normalise one batch, without leaving the caller's device (no host round trip)."""
    torch_in = isinstance(crops, torch.Tensor)
    if not torch_in and not isinstance(crops, np.ndarray):
        crops = np.asarray(crops)
    if crops.ndim == 3:  # a single crop
        crops = crops[None]
    if crops.ndim != 4:
        raise ValueError(f"crops must be a 4-d batch, got shape {list(crops.shape)}")
    n, size = int(crops.shape[0]), spec.crop_size
    is_uint8 = crops.dtype in (np.uint8, torch.uint8)
    if torch_in:
        device = crops.device
        image = crops.permute(0, 3, 1, 2) if is_uint8 and _is_nhwc(tuple(crops.shape), size) else crops
        image = image.float() / 127.5 - 1.0 if is_uint8 else image.float()
        a = aus if isinstance(aus, torch.Tensor) else torch.as_tensor(np.asarray(aus, dtype=np.float32))
        a = a.to(device=device, dtype=torch.float32)
    else:
        device = None
        image = crops.transpose(0, 3, 1, 2) if is_uint8 and _is_nhwc(tuple(crops.shape), size) else crops
        image = image.astype(np.float32) / np.float32(127.5) - np.float32(1.0) if is_uint8 else image
        image = np.ascontiguousarray(image, dtype=np.float32)
        a = aus.detach().cpu().numpy() if isinstance(aus, torch.Tensor) else np.asarray(aus)
        a = np.asarray(a, dtype=np.float32)
    if not is_uint8 and tuple(image.shape[1:]) != (3, size, size):
        raise ValueError(f"float crops must be NCHW [N,3,{size},{size}] in [-1,1], got {list(image.shape)}")
    if a.ndim == 1:
        a = a[None].expand(n, -1) if torch_in else np.broadcast_to(a[None], (n, a.shape[0]))
    if tuple(a.shape) != (n, spec.n_aus):
        raise ValueError(f"aus must be [{n},{spec.n_aus}] ({spec.n_aus} AUs of this model), got {list(a.shape)}")
    if torch_in:
        image, a = image.contiguous(), a.contiguous()
    else:
        a = np.ascontiguousarray(a)
    return Batch(image, a, torch_in, device)


def to_caller(batch: Batch, outputs: Outputs) -> Outputs:
    """Outputs in the caller's kind: numpy for numpy input, torch on the input's device for torch input."""

    def conv(t):
        if t is None:
            return None
        if batch.torch_in:
            t = torch.from_numpy(np.asarray(t)) if isinstance(t, np.ndarray) else t
            return t.to(device=batch.device, dtype=torch.float32)
        return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)

    return Outputs(conv(outputs.attention), conv(outputs.color), conv(outputs.flow))


class Engine(ABC):
    """A generator behind one backend. Subclasses implement :meth:`_run` on a prepared :class:`Batch`."""

    backend: str = "?"
    spec: ModelSpec
    device: str = "cpu"
    precision: str = "fp32"
    #: The largest batch the backend accepts in one call (larger batches are split).
    max_batch: int = 1 << 30

    def run(self, crops: Any, aus: Any) -> Outputs:
        """Run a batch: ``crops`` uint8 NHWC/NCHW or float [-1,1] NCHW; ``aus`` [N,K] or [K]."""
        batch = prepare(crops, aus, self.spec)
        n = int(batch.image.shape[0])
        if n <= self.max_batch:
            return to_caller(batch, self._run(batch))
        parts = [self._run(Batch(batch.image[i:i + self.max_batch], batch.aus[i:i + self.max_batch],
                                 batch.torch_in, batch.device)) for i in range(0, n, self.max_batch)]
        parts = [to_caller(batch, p) for p in parts]
        cat = torch.cat if batch.torch_in else np.concatenate
        flow = cat([p.flow for p in parts]) if self.spec.flow else None
        return Outputs(cat([p.attention for p in parts]), cat([p.color for p in parts]), flow)

    __call__ = run

    @abstractmethod
    def _run(self, batch: Batch) -> Outputs: ...

    def describe(self) -> str:
        return f"{self.backend} {self.device} {self.precision} ({self.spec.name}, {self.spec.n_aus} AUs)"

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release backend resources (device buffers, sessions)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def physical_cores() -> int:
    """Physical cores available to this process: SMT siblings share a core's FMA units, so
    oversubscribing them slows convolutions down."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        p = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(p.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def cuda_available() -> bool:
    return torch.cuda.is_available()
