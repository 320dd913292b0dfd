"""``--model default`` is the refine model on every engine: which engine it picks, and (on a GPU)
that FP16 on CUDA and the TensorRT FP16 engine compute what FP32 on the CPU does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.refine_engine import RefineEngine, refine_engine
from rtanim.errors import InputError
from rtanim.models.refine import RefineNet, RefineSpec, load_refine, shipped_refine
from rtanim.pipeline.generators import resolve_default


def small_net(**spec) -> RefineNet:  # noqa: ANN003
    torch.manual_seed(1)
    net = RefineNet(RefineSpec(widths=(8, 8, 8), n_res=1, **spec)).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    return net


def inputs(net: RefineNet, n: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    s = net.spec.crop_size
    return (rng.uniform(-1, 1, (n, 3, s, s)).astype(np.float32), rng.uniform(0, 1, (n, len(net.spec.au_codes))).astype(np.float32),
            (rng.uniform(0, 1, (n, net.spec.geometry_inputs, s, s)) > 0.7).astype(np.float32))


@pytest.mark.skipif(shipped_refine() is None, reason="no refine weights ship in this checkout")
@pytest.mark.parametrize(("engine", "device"), [("auto", None), ("auto", "cuda"), ("torch", "cuda"), ("tensorrt", None),
                                                ("onnxruntime", None), ("auto", "cpu")])
def test_default_is_the_shipped_refine_model_on_every_engine(engine, device):
    assert resolve_default(engine, device) == "refine"


def test_an_engine_that_cannot_run_here_says_why_in_one_line():
    net = small_net()
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusals are for CPU machines")
    with pytest.raises(InputError, match="CUDA"):
        RefineEngine(net, "torch", device="cuda")
    from engines.trt_engine import trt_available

    with pytest.raises(InputError) as e:
        refine_engine(net, "tensorrt")
    assert trt_available() in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="CPU"):
        RefineEngine(net, "onnxruntime", device="cuda")
    assert refine_engine(net, "auto").describe() == "onnxruntime cpu fp32"  # no GPU: the CPU path


def test_torch_and_onnxruntime_agree_on_the_cpu(tmp_path):
    from engines.cache import EngineCache

    net = small_net(flow=True)
    feed = inputs(net)
    ort = RefineEngine(net, "onnxruntime", cache=EngineCache(tmp_path)).run(*feed)
    ref = RefineEngine(net, "torch", device="cpu").run(*feed)
    for a, b in zip(ort, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def _trained() -> RefineNet:
    weights = shipped_refine()
    if weights is None:
        pytest.skip("no refine weights ship in this checkout")
    return load_refine(weights)[0]


def test_fp16_on_cuda_matches_fp32_on_the_cpu():
    """The shipped file as `default` runs it on a CUDA device (FP16) against FP32 on the CPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none visible to torch)")
    net = _trained()
    feed = inputs(net, 8)
    gpu = refine_engine(net, "torch", "cuda")
    assert gpu.describe().endswith("fp16")
    for a, b in zip(gpu.run(*feed), RefineEngine(net, "torch", device="cpu").run(*feed), strict=True):
        assert np.isfinite(a).all() and np.abs(a - b).max() < 2e-2


def test_tensorrt_fp16_engine_matches_fp32_on_the_cpu(tmp_path):
    """The shipped file as a TensorRT FP16 engine (built, cached, run by RefineEngine) against FP32."""
    from engines.trt_engine import trt_available

    why = trt_available()
    if why is not None:
        pytest.skip(why)
    from engines.cache import EngineCache

    net = _trained()
    feed = inputs(net, 10)  # more than the profile's batch of 8: run in slices
    trt = RefineEngine(net, "tensorrt", cache=EngineCache(tmp_path), max_batch=8)
    assert trt.describe() == "tensorrt cuda fp16"
    for a, b in zip(trt.run(*feed), RefineEngine(net, "torch", device="cpu").run(*feed), strict=True):
        assert np.isfinite(a).all() and np.abs(a - b).max() < 2e-2
