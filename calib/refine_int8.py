"""INT8 for the refine net on the CPU: ONNX Runtime static quantisation, its speed and what it changes.

    python calib/refine_int8.py rtanim/assets/refine.safetensors --data .data/talk -o runs/int8

TensorRT's INT8 (engines/int8.py) needs a GPU; on a laptop CPU the same question is ONNX Runtime's
QDQ quantisation (per-channel INT8 weights, INT8 activations calibrated on real inputs). This script:

1. builds real refine inputs from prepared clips (``rtanim prepare`` folders): each frame warped by the
   net's own AU basis to the AUs of another frame of its clip, as the run time does; calibration on
   training people, the comparison on the people the trainer holds out (``train.refine_data.split_people``);
2. quantises the FP32 export (``onnxruntime.quantization.quantize_static``, QDQ, per channel);
3. times both at batch 1 on 1 and 2 threads (median of repeated runs, the same process, alternating);
4. compares the composites ``A * warped + (1 - A) * C`` of INT8 against FP32 on held-out inputs:
   PSNR over the crop and inside the mouth and eyes (paint happens there), and the largest error.

Writes ``int8.json`` and ``refine_int8.onnx`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401


def real_inputs(net, frames, picks: np.ndarray, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:  # noqa: ANN001
    """Batch-1 feeds for frames ``picks``: each warped to the AUs of another frame of its clip."""
    from rtanim.models.refine import warp_inputs

    warp = net.spec.warp_model()
    feeds = []
    for i in picks:
        same = np.flatnonzero(frames.clip == frames.clip[i])
        j = int(rng.choice(same))
        warped, geometry, _, _ = warp_inputs(warp, frames.images[i], frames.landmarks[i], frames.aus[i], frames.aus[j],
                                             own_mouth=net.spec.paint_keep_stretch > 0)
        feeds.append({"image": (warped.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0),
                      "aus": frames.aus[j][None].astype(np.float32), "geometry": geometry[None].astype(np.float32)})
    return feeds


def composite(outs: list[np.ndarray], image: np.ndarray) -> np.ndarray:
    a, c = outs[0], outs[1]
    return (a * image + (1.0 - a) * c)[0]


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (a - b) ** 2  # both in [-1, 1]: peak-to-peak 2
    mse = float(d.mean() if mask is None else d[:, mask].mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(4.0 / mse)


def timed(session, feed: dict[str, np.ndarray], names: list[str]) -> float:  # noqa: ANN001
    t = time.perf_counter()
    session.run(names, feed)
    return (time.perf_counter() - t) * 1000.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, help="refine checkpoint")
    p.add_argument("--data", nargs="+", required=True, help="rtanim prepare folders of clips (e.g. .data/talk)")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--calibrate", type=int, default=64, help="calibration inputs (training people)")
    p.add_argument("--compare", type=int, default=200, help="held-out inputs compared")
    p.add_argument("--repeat", type=int, default=100, help="timed runs per engine and thread count")
    a = p.parse_args(argv)

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from engines.ort_engine import session_options
    from engines.refine_engine import export_refine_onnx
    from rtanim.face.landmarks import EYES, INNER_MOUTH, polygon_mask
    from rtanim.models.refine import load_refine
    from train.refine_data import load_frames, split_people

    net, _ = load_refine(a.weights)
    frames = load_frames(a.data)
    held = split_people(frames)  # the trainer's held-out people (its --held-out and --seed defaults)
    video = frames.index >= 0
    rng = np.random.default_rng(0)
    train_ids = rng.choice(np.flatnonzero(video & ~held), a.calibrate, replace=False)
    test_ids = rng.choice(np.flatnonzero(video & held), a.compare, replace=False)
    calib, test = real_inputs(net, frames, train_ids, rng), real_inputs(net, frames, test_ids, rng)

    a.out.mkdir(parents=True, exist_ok=True)
    fp32 = export_refine_onnx(net, a.out / "refine_fp32.onnx")
    int8 = a.out / "refine_int8.onnx"

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):  # noqa: ANN202
            return next(self.it, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    names = list(net.spec.outputs)
    result: dict[str, object] = {"weights": str(a.weights), "calibration_inputs": len(calib), "compared": len(test),
                                 "onnxruntime": ort.__version__, "ms_batch1": {}}
    for threads in (1, 2):
        sessions = {k: ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
                    for k, path in (("fp32", fp32), ("int8", int8))}
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        for s in sessions.values():  # warm up
            for f in test[:5]:
                s.run(names, f)
        for r in range(a.repeat):
            for k in (("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")):
                times[k].append(timed(sessions[k], test[r % len(test)], names))
        result["ms_batch1"][f"{threads}_threads"] = {k: round(float(np.median(v)), 2) for k, v in times.items()}
    s32 = ort.InferenceSession(str(fp32), session_options(2), providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(str(int8), session_options(2), providers=["CPUExecutionProvider"])
    crop_psnr, region_psnr, worst = [], [], 0.0
    for f, i in zip(test, test_ids, strict=True):
        c32, c8 = composite(s32.run(names, f), f["image"]), composite(s8.run(names, f), f["image"])
        region = polygon_mask(frames.landmarks[i], [INNER_MOUTH, *EYES], net.spec.crop_size) > 0
        region = region | (np.abs(c32 - f["image"][0]).max(0) > 0.02)  # and wherever the net painted
        crop_psnr.append(psnr(c8, c32))
        region_psnr.append(psnr(c8, c32, region))
        worst = max(worst, float(np.abs(c8 - c32).max()) * 127.5)
    result["int8_vs_fp32"] = {"crop_psnr_db_median": round(float(np.median(crop_psnr)), 2),
                              "painted_psnr_db_median": round(float(np.median(region_psnr)), 2),
                              "painted_psnr_db_min": round(float(np.min(region_psnr)), 2),
                              "max_error_grey_levels": round(worst, 1)}
    (a.out / "int8.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
