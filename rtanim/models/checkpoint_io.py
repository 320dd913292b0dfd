"""The one checkpoint convention of rtanim's models: safetensors tensors with string metadata.

Every model file (the GANimation nets, ``refine``) carries ``format`` (the model family),
``precision`` (``fp32`` or ``fp16``) and ``spec`` (the architecture, JSON), any fields of its
family (a GANimation file's ``version`` and data ``fingerprint``), and ``extra.<name>`` for
everything else, such as training totals: each a string, JSON where the value is structured.
Files are written atomically (:func:`rtanim.files.staged`), so no half-written file has the final name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from rtanim.errors import InputError
from rtanim.files import staged

PRECISIONS = ("fp32", "fp16")
EXTRA = "extra."
#: Metadata keys of the convention itself, besides ``extra.*``.
RESERVED = ("format", "version", "precision", "spec", "fingerprint")


def write_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], *, format: str, spec: str,
                     precision: str = "fp32", fields: Mapping[str, str] | None = None,
                     extra: Mapping[str, str] | None = None) -> Path:
    """Write ``state`` at ``precision`` with the convention's metadata.

    Args:
        format: the model family (``rtanim.generator``, ``rtanim.refine``).
        spec: the architecture as JSON.
        fields: family fields kept under their own names (``version``, ``fingerprint``).
        extra: everything else, stored as ``extra.<name>``; strings (JSON for structured values).

    Returns:
        ``path``. Raises InputError for a precision other than fp32 / fp16.
    """
    from safetensors.torch import save_file

    if precision not in PRECISIONS:
        raise InputError(None, f"checkpoints are fp32 or fp16, not {precision!r}", field="--precision")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}
    meta = {"format": format, **(fields or {}), "spec": spec, "precision": precision,
            **{f"{EXTRA}{k}": str(v) for k, v in (extra or {}).items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a safetensors file (no tensor is read); InputError when unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise InputError(path, f"not a readable safetensors file ({e})") from None


def extras(meta: Mapping[str, str]) -> dict[str, str]:
    """The ``extra.<name>`` fields by name. A refine file written before this convention kept its
    extras as top-level keys (the shipped 38,808-step weights among them): those count too."""
    out = {k: v for k, v in meta.items() if k not in RESERVED and not k.startswith(EXTRA)}
    out.update({k[len(EXTRA):]: v for k, v in meta.items() if k.startswith(EXTRA)})
    return out
