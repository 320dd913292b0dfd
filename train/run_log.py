"""What a training run reports while it goes: metrics.jsonl (and TensorBoard), sample grids, a progress bar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class MetricLog:
    """JSONL always (cheap, greppable, what tests read); TensorBoard too when it is installed."""

    def __init__(self, run: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run / "metrics.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tb"))
            except ImportError:  # the `train` extra is optional
                self.tb = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **{k: round(float(v), 7) for k, v in values.items()}}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k.replace("_", "/", 1), float(v), step)

    def image(self, step: int, tag: str, grid: np.ndarray) -> None:
        if self.enabled and self.tb is not None:
            self.tb.add_image(tag, grid, step, dataformats="HWC")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run: str | Path) -> list[dict[str, float]]:
    path = Path(run) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def image_grid(rows: list[torch.Tensor]) -> np.ndarray:
    """Rows of [N,C,H,W] images in [-1, 1] (1-channel maps in [0, 1]) -> one HxWx3 uint8 grid."""
    out = []
    for r in rows:
        r = r.detach().float().cpu()
        r = r.repeat(1, 3, 1, 1) if r.shape[1] == 1 else (r + 1) / 2
        out.append(torch.cat(list(r.clamp(0, 1)), dim=2))
    return (torch.cat(out, dim=1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def progress_bar(enabled: bool, total: int, start: int):
    """A started rich bar on stderr and its task, or None when disabled."""
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("training", total=total, completed=start)
    bar.start()
    return bar, task

