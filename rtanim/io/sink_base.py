"""What every sink shares: the Sink protocol, the context-manager base and the image checks.

Kept apart from :mod:`rtanim.io.sink_multi` so each sink module can build on it without importing the others.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from rtanim.errors import InputError
from rtanim.io.source_base import Frame


@runtime_checkable
class Sink(Protocol):
    """Where composed frames go."""

    def write(self, frame: Frame, image: np.ndarray) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Sink: ...
    def __exit__(self, *exc: object) -> None: ...


class SinkBase:
    """A sink as a context manager: kept on success and Ctrl-C, discarded on a failure.

    ``kind`` names the sink in run statistics; ``main_thread`` marks a sink that must be written on
    the thread that opened it (a GUI window) rather than on a worker thread of its own.
    """

    kind = "sink"  # subclasses name their kind
    main_thread = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Finalise on success and on Ctrl-C / exit (outputs so far are kept); discard on a real failure."""
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt | SystemExit):
            self.close()
        else:
            self.discard()

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def discard(self) -> None:
        """Stop without keeping a result; for sinks with nothing to finalise it is just close()."""
        self.close()


def fit_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image at the sink's size (a camera may change mode after reconnecting), RGB uint8 contiguous."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if (image.shape[1], image.shape[0]) != tuple(size):
        image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def check_size(size: tuple[int, int], what: str) -> tuple[int, int]:
    w, h = (int(v) for v in size)
    if w < 2 or h < 2:
        raise InputError(what, f"frame size {w}x{h} is too small")
    return w, h

