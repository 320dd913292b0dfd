"""On-disk cache of built artefacts (TensorRT engines, ONNX exports, timing caches).

A TensorRT engine is only valid for the weights, TensorRT version, GPU and
precision it was built with, and a build takes minutes, so engines are kept
under a user cache dir keyed by all of those. A lookup that misses says which
part of the key changed since the last build of that model, so "why is it
rebuilding?" has an answer in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from engines.base import log
from rtanim.files import staged, write_text

#: Environment variable that overrides the cache directory.
CACHE_ENV = "RTANIM_CACHE"


def cache_root() -> Path:
    """``$RTANIM_CACHE``, else ``$XDG_CACHE_HOME/rtanim/engines``, else ``~/.cache/rtanim/engines``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rtanim" / "engines"


@dataclass(frozen=True)
class CacheKey:
    """What a built artefact depends on; any change means a rebuild."""

    kind: str  # tensorrt | onnx | torch2trt | timing
    label: str  # human name of the model ("lite+flow"); groups entries for mismatch messages
    model: str  # weights digest (rtanim.models.ganimation.model_digest)
    precision: str = "fp32"
    backend_version: str = ""  # e.g. the TensorRT version
    device: str = ""  # e.g. the GPU name
    max_batch: int = 0
    extra: str = ""  # anything else the builder depends on (calibration cache digest, opset, ...)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def filename(self, suffix: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", self.label) or "model"
        return f"{self.kind}-{safe}-{self.precision}-{self.digest}{suffix}"


_DESCRIBE = {
    "model": "model weights", "precision": "precision", "backend_version": "backend version",
    "device": "device", "max_batch": "max batch", "extra": "build options",
}


@dataclass
class CacheResult:
    path: Path
    hit: bool
    reason: str  # why it was built (or "cache hit")


class EngineCache:
    """A directory of artefacts, each with a ``.json`` sidecar holding its :class:`CacheKey`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def path_for(self, key: CacheKey, suffix: str = ".engine") -> Path:
        return self.root / key.filename(suffix)

    def lookup(self, key: CacheKey, suffix: str = ".engine") -> Path | None:
        path = self.path_for(key, suffix)
        return path if path.is_file() and path.with_suffix(".json").is_file() else None

    def entries(self) -> list[tuple[Path, CacheKey]]:
        out = []
        for meta in self.root.glob("*.json"):
            try:
                data = json.loads(meta.read_text())
                key = CacheKey(**{f.name: data[f.name] for f in fields(CacheKey)})
                out.append((int(data.get("built_at_ns", 0)), meta, key))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a foreign or damaged sidecar is not ours to judge
        return [(meta, key) for _, meta, key in sorted(out, key=lambda e: e[0], reverse=True)]

    def why_miss(self, key: CacheKey) -> str:
        """The difference from the newest entry of the same model label and kind, in words."""
        for _, old in self.entries():
            if old.kind == key.kind and old.label == key.label:
                diffs = ["model weights changed" if f == "model"
                         else f"{_DESCRIBE[f]} {getattr(old, f) or '-'} -> {getattr(key, f) or '-'}"
                         for f in _DESCRIBE if getattr(old, f) != getattr(key, f)]
                return "rebuilding: " + "; ".join(diffs) if diffs else "rebuilding: cached file missing"
        return f"no cached {key.kind} for {key.label} ({key.precision})"

    def get_or_build(self, key: CacheKey, build: Callable[[Path], None], suffix: str = ".engine") -> CacheResult:
        """The cached artefact for ``key``, or ``build(tmp_path)`` then publish it atomically."""
        found = self.lookup(key, suffix)
        if found is not None:
            log.info("%s cache hit: %s", key.kind, found)
            return CacheResult(found, True, "cache hit")
        reason = self.why_miss(key)
        level = logging.WARNING if reason.startswith("rebuilding") else logging.INFO
        log.log(level, "%s: %s (building %s)", key.label, reason, key.kind)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key, suffix)
        with staged(path) as tmp:
            build(tmp)
            if not tmp.is_file():
                raise RuntimeError(f"{key.kind} build wrote nothing to {tmp}")
        write_text(path.with_suffix(".json"),
                   json.dumps({**asdict(key), "built_at_ns": time.time_ns()}, indent=1, sort_keys=True))
        return CacheResult(path, False, reason)
