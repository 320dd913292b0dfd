"""``rtanim export``: a generator to ONNX, a TensorRT engine, or an rtanim safetensors checkpoint.

The one module that knows every format, so the engine modules form a line: export (ONNX) <-
trt_engine (TensorRT, built from the cached ONNX) <- convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.base import log
from engines.export import export_onnx
from engines.trt_engine import build_engine_file  # imports tensorrt only when it builds
from rtanim.errors import InputError
from rtanim.models.ganimation import ModelSpec, load_checkpoint_any, load_model, save_checkpoint

#: ``--format`` choices (rtanim.checks validates them before this module loads).
FORMATS = ("onnx", "tensorrt", "safetensors")


@dataclass
class ExportResult:
    path: Path
    format: str
    precision: str
    spec: ModelSpec
    note: str = ""


def export_model(
    model: str | Path,
    fmt: str,
    out: str | Path,
    *,
    precision: str | None = None,
    calib: str | Path | None = None,
    max_batch: int = 32,
) -> ExportResult:
    """What ``rtanim export`` does: load ``model`` (name, .safetensors or imported .pth) and write ``out``."""
    if fmt not in FORMATS:
        raise InputError(None, f"unknown format {fmt!r} (choose {', '.join(FORMATS)})", field="--format")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise InputError(out, "is a directory; give a file name", field="-o")
    if calib is not None and fmt != "tensorrt":
        raise InputError(None, "--calib only applies to --format tensorrt --precision int8", field="--calib")
    if fmt == "safetensors":
        precision = precision or "fp32"
        if precision not in ("fp32", "fp16"):
            raise InputError(None, f"safetensors stores fp32 or fp16, not {precision}", field="--precision")
        path = Path(model)
        ckpt = load_checkpoint_any(path) if path.suffix in (".pth", ".pt", ".safetensors") and path.exists() else None
        if ckpt is None:  # a registry name: save what load_model gives
            m = load_model(str(model))
            save_checkpoint(m, out, precision=precision)
            return ExportResult(out, fmt, precision, m.spec)
        save_checkpoint(ckpt, out, precision=precision)
        return ExportResult(out, fmt, precision, ckpt.spec, ckpt.extra.get("source", ""))
    m = load_model(model)
    if fmt == "onnx":
        precision = precision or "fp32"
        export_onnx(m, out, precision=precision)
        return ExportResult(out, fmt, precision, m.spec)
    precision = precision or "fp16"
    if precision == "int8" and calib is None:
        raise InputError(None, "INT8 needs calibration data: --calib DIR (face crops) or a .cache file",
                         field="--calib")
    note = build_engine_file(m, out, precision=precision, max_batch=max_batch, calib=calib)
    log.info("wrote %s", out)
    return ExportResult(out, fmt, precision, m.spec, note)
