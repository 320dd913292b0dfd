"""ONNX export of a generator: the I/O contract every engine and other tool runs.

The ONNX graph is what other tools (and our TensorRT / ONNX Runtime backends)
run: inputs ``image`` float32 [N,3,S,S] in [-1,1] and ``aus`` float32 [N,K];
outputs ``attention`` [N,1,S,S], ``color`` [N,3,S,S] and, for flow models,
``flow`` [N,2,S,S]; the batch is dynamic. Its metadata carries the AU list, the
model name and the full :class:`ModelSpec`, so a bare ``.onnx`` is self-describing.

This module is the bottom of the engine line: export <- trt_engine (builds from the cached ONNX)
<- convert (``rtanim export``, every format). It imports no engine, so nothing loops back.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from engines.cache import CacheKey, EngineCache
from rtanim.errors import InputError
from rtanim.files import staged
from rtanim.models.ganimation import (
    Generator,
    ModelSpec,
    model_digest,
)

ONNX_OPSET = 17  # InstanceNormalization, Einsum, dynamic Range: well supported by ORT and TensorRT 8.6+
INPUTS = ("image", "aus")
META_MODEL, META_AUS, META_SPEC, META_DIGEST, META_PRECISION = (
    "rtanim.model", "rtanim.au_codes", "rtanim.spec", "rtanim.weights_sha256", "rtanim.precision")


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
