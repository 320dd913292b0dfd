"""Engine benchmarks (``rtanim bench --engines``): median ms per batch and crops/s per backend and model.

Medians, not means: a stray scheduler hiccup should not move the number.
Every row carries its ratio to the PyTorch FP32-CPU (or CUDA) run of the same
model and batch in the same session, since absolute numbers from different
runs or machines are not comparable.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engines.base import Engine
from engines.select import BACKENDS, backend_status, select_engine
from rtanim.models.ganimation import Generator, load_model

MODELS = ("lite", "lite+flow", "ganimation", "ganimation+flow")
BATCHES = (1, 8, 32)


@dataclass
class BenchRow:
    backend: str
    model: str
    batch: int
    device: str
    precision: str
    median_ms: float  # per batch
    iters: int
    ratio: float | None = None  # crops/s relative to the torch run of the same model and batch

    @property
    def ms_per_crop(self) -> float:
        return self.median_ms / self.batch

    @property
    def crops_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms


@dataclass(frozen=True)
class BenchConfig:
    models: Sequence[str] = MODELS
    backends: Sequence[str] | None = None  # None: every available backend
    batches: Sequence[int] = BATCHES
    iters: int = 10
    warmup: int = 2
    budget_s: float = 10.0  # per (backend, model, batch): stop early once spent (after 3 iterations)
    device: str | None = None

    @classmethod
    def quick(cls, **kw) -> BenchConfig:
        """Few iterations and no batch 32 (seconds per call for ``ganimation`` on a CPU)."""
        return cls(**{"iters": 3, "warmup": 1, "budget_s": 2.0, "batches": (1, 8), **kw})


def time_engine(engine: Engine, batch: int, *, iters: int = 10, warmup: int = 2, budget_s: float = 10.0,
                seed: int = 0) -> tuple[float, int]:
    """(median ms per call, iterations) on random uint8 NHWC crops, the pipeline's form."""
    rng = np.random.default_rng(seed)
    s, k = engine.spec.crop_size, engine.spec.n_aus
    crops = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    aus = rng.random((batch, k), dtype=np.float32)
    cuda = engine.device.startswith("cuda")
    if cuda:  # crops already on the GPU, as the pipeline hands them over
        crops, aus = torch.from_numpy(crops).to(engine.device), torch.from_numpy(aus).to(engine.device)

    def call() -> None:
        engine.run(crops, aus)
        if cuda:
            torch.cuda.synchronize(engine.device)

    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters and (len(times) < min(3, iters) or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times), len(times)


def bench_engines(config: BenchConfig = BenchConfig(), on_row: Callable[[BenchRow], None] | None = None,
                  log: logging.Logger | None = None) -> list[BenchRow]:
    """Benchmark each available backend x model x batch; unavailable backends are logged and skipped."""
    log = log or logging.getLogger("rtanim.bench")
    status = backend_status(config.device)
    backends = list(config.backends or BACKENDS)
    # The reference runs first so every other row can report its ratio.
    backends.sort(key=lambda b: b != "torch")
    rows: list[BenchRow] = []
    for name in config.models:
        model: Generator = load_model(name)
        for backend in backends:
            if status.get(backend):
                log.info("bench: skipping %s (%s)", backend, status[backend])
                continue
            engine = select_engine(backend, model, device=config.device)
            try:
                for batch in config.batches:
                    ms, n = time_engine(engine, batch, iters=config.iters, warmup=config.warmup,
                                        budget_s=config.budget_s)
                    row = BenchRow(backend, name, batch, engine.device, engine.precision, ms, n)
                    base = next((r for r in rows if (r.backend, r.model, r.batch) == ("torch", name, batch)), row
                                if backend == "torch" else None)
                    row.ratio = base.median_ms / ms if base else None
                    rows.append(row)
                    if on_row:
                        on_row(row)
            finally:
                engine.close()
    return rows
