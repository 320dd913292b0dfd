"""Shared fixtures: the read-only data set beside the project (or at $RTANIM_SHARED_DATA), skipped when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RTANIM_SHARED_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"needs the shared data set at {SHARED_DATA} (not present on this machine)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _private_engine_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep engines and ONNX files that tests build out of the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RTANIM_CACHE", str(tmp_path_factory.mktemp("engine-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def portrait_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s clip of the bundled portrait (no shared data needed): a camera stand-in for live-run tests."""
    from rtanim.commands.demo import make_sample_clip

    return make_sample_clip(tmp_path_factory.mktemp("portrait") / "portrait6.mp4", seconds=6.0, size=256)


@pytest.fixture(scope="session")
def clip_frames(shared_data: Path, tmp_path_factory) -> Path:
    """Prepared frames of one short talking clip (every frame at 10 fps)."""
    from train.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("refine") / "clip"
    prepare([shared_data / "video" / "single_face.mp4"], out, PrepareOptions(fps=10, test_fraction=0.0, dedup=0.0),
            progress=False)
    return out
