"""Export a generator: ONNX (the I/O contract), TensorRT engines, and our safetensors format.

The ONNX graph is what other tools (and our TensorRT / ONNX Runtime backends)
run: inputs ``image`` float32 [N,3,S,S] in [-1,1] and ``aus`` float32 [N,K];
outputs ``attention`` [N,1,S,S], ``color`` [N,3,S,S] and, for flow models,
``flow`` [N,2,S,S]; the batch is dynamic. Its metadata carries the AU list, the
model name and the full :class:`ModelSpec`, so a bare ``.onnx`` is self-describing.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engines.base import log
from engines.cache import CacheKey, EngineCache
from rtanim.errors import InputError
from rtanim.files import staged
from rtanim.models import (
    Generator,
    ModelSpec,
    load_checkpoint_any,
    load_model,
    model_digest,
    save_checkpoint,
)

ONNX_OPSET = 17  # InstanceNormalization, Einsum, dynamic Range: well supported by ORT and TensorRT 8.6+
INPUTS = ("image", "aus")
META_MODEL, META_AUS, META_SPEC, META_DIGEST, META_PRECISION = (
    "rtanim.model", "rtanim.au_codes", "rtanim.spec", "rtanim.weights_sha256", "rtanim.precision")
FORMATS = ("onnx", "tensorrt", "safetensors")


class _Fp16Graph(nn.Module):
    """FP16 weights and maths inside, float32 I/O outside: the contract's dtypes stay fixed."""

    def __init__(self, model: Generator) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, image: torch.Tensor, aus: torch.Tensor):
        return tuple(o.float() for o in self.model(image.half(), aus.half()))


def export_onnx(model: Generator, path: str | Path, *, precision: str = "fp32", opset: int = ONNX_OPSET) -> Path:
    """Write the contract's ONNX graph (dynamic batch) with metadata; atomic (temporary name, then rename)."""
    if precision not in ("fp32", "fp16"):
        raise InputError(None, f"ONNX export is fp32 or fp16, not {precision}", field="--precision")
    spec = model.spec
    digest = model_digest(model)
    net = _detached_copy(model)
    if precision == "fp16":
        net = _Fp16Graph(net)
    size = spec.crop_size
    dummy = (torch.zeros(2, 3, size, size), torch.full((2, spec.n_aus), 0.5))
    names = list(spec.outputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and instance_norm notes
            # The TorchScript exporter: deterministic, and needs no onnxscript (not a dependency).
            torch.onnx.export(
                net, dummy, str(tmp), dynamo=False, input_names=list(INPUTS), output_names=names,
                dynamic_axes={n: {0: "N"} for n in (*INPUTS, *names)}, opset_version=opset,
                do_constant_folding=True,
            )
        finish_onnx(tmp, {META_MODEL: spec.name, META_AUS: json.dumps(list(spec.au_codes)),
                          META_SPEC: spec.to_json(), META_DIGEST: digest, META_PRECISION: precision})
    return path


def finish_onnx(path: Path, meta: dict[str, str]) -> None:
    """Stamp rtanim's metadata into an exported graph, check it and save it in place."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "rtanim"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _detached_copy(model: Generator) -> Generator:
    clone = Generator(model.spec)
    clone.load_state_dict(model.state_dict())
    clone.fast = model.fast
    return clone.eval().float().cpu()


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except Exception as e:
        raise InputError(path, f"not a readable ONNX file ({e})") from None
    return {p.key: p.value for p in proto.metadata_props}


def spec_from_onnx_metadata(meta: dict[str, str], source: str | Path) -> ModelSpec:
    if META_SPEC not in meta:
        raise InputError(source, "ONNX file without rtanim metadata (rtanim.spec)", field=META_SPEC)
    try:
        return ModelSpec.from_json(meta[META_SPEC])
    except (ValueError, TypeError) as e:
        raise InputError(source, f"bad rtanim.spec metadata ({e})", field=META_SPEC) from None


def cached_onnx(model: Generator, cache: EngineCache | None = None, *, precision: str = "fp32") -> Path:
    """The model's ONNX export, kept in the engine cache so engines built from one model share it."""
    cache = cache or EngineCache()
    key = CacheKey("onnx", model.spec.name, model_digest(model), precision,
                   backend_version=f"torch-{torch.__version__.split('+')[0]}", extra=f"opset{ONNX_OPSET}")
    return cache.get_or_build(key, lambda tmp: export_onnx(model, tmp, precision=precision), suffix=".onnx").path


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
    from engines.trt_engine import build_engine_file  # imports tensorrt lazily, fails with a clear InputError

    precision = precision or "fp16"
    if precision == "int8" and calib is None:
        raise InputError(None, "INT8 needs calibration data: --calib DIR (face crops) or a .cache file",
                         field="--calib")
    note = build_engine_file(m, out, precision=precision, max_batch=max_batch, calib=calib)
    log.info("wrote %s", out)
    return ExportResult(out, fmt, precision, m.spec, note)
