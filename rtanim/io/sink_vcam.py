"""The virtual camera sink: a webcam video-call apps can pick (pyvirtualcam), imported only when asked for."""

from __future__ import annotations

import sys

import numpy as np

from rtanim.errors import InputError, RunError
from rtanim.io.sink_base import SinkBase, check_size, fit_image
from rtanim.io.source_base import Frame

VCAM_HINT = {
    "linux": "load v4l2loopback: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=rtanim",
    "other": "install OBS Studio and start its Virtual Camera once (Windows / macOS)",
}


class VirtualCameraSink(SinkBase):
    """A virtual webcam (pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera on Windows / macOS).

    Frames are sent as they come: pacing belongs to the live source, so no
    ``sleep_until_next_frame``. With no device, one InputError line says how to get one.
    """

    kind = "vcam"

    def __init__(self, size: tuple[int, int], fps: float | None = 30.0, *, backend: str | None = None,
                 device: str | None = None) -> None:
        import pyvirtualcam

        self.size = check_size(size, "--vcam")
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(pyvirtualcam.camera.BACKENDS) or "none on this system"
            raise InputError("--vcam", f"unknown virtual camera backend {backend!r} (available: {known})")
        try:
            self._cam = pyvirtualcam.Camera(self.size[0], self.size[1], float(fps or 30.0),
                                            fmt=pyvirtualcam.PixelFormat.RGB, backend=backend, device=device)
        except Exception as e:  # noqa: BLE001 - pyvirtualcam raises RuntimeError / ValueError per backend
            why = " ".join(str(e).split())  # backends report one line each: keep ONE line
            hint = VCAM_HINT["linux" if sys.platform.startswith("linux") else "other"]
            raise InputError("--vcam", f"no virtual camera available ({why}); {hint}") from None
        self.device = self._cam.device
        self.backend = self._cam.backend
        self._closed = False

    @property
    def frames(self) -> int:
        return self._cam.frames_sent

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._closed:
            raise RunError("virtual camera: write after close")
        try:
            self._cam.send(fit_image(image, self.size))
        except Exception as e:  # noqa: BLE001 - device errors come from native code
            raise RunError(f"virtual camera {self.device}: sending failed ({e})") from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cam.close()

