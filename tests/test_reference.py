"""A remembered open mouth (rtanim.models.reference): its channels, the memory, the network's new input
(starts as the net it widens, ONNX parity), the training pairs, the generator and the
self-reenactment test's reference policies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rtanim.errors import InputError
from rtanim.face.landmarks import INNER_MOUTH, OUTER_MOUTH, polygon_mask
from rtanim.models.geometry import AUBasis
from rtanim.models.reference import (
    MIN_OPEN_PX,
    REFERENCE_CHANNELS,
    MouthMemory,
    lip_affine,
    mouth_area,
    reference_maps,
)
from rtanim.models.refine import RefineNet, RefineSpec, load_refine, save_refine
from train.refine_grow import with_reference

LOWER_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)  # the inner lower-lip contour (part of INNER_MOUTH)


@pytest.fixture(scope="module")
def closed() -> np.ndarray:
    return AUBasis.load().mean.astype(np.float64)[:, :2]


def opened(landmarks: np.ndarray, px: float) -> np.ndarray:
    """The face with its inner lower lip moved down by ``px`` (an opening mouth)."""
    out = landmarks.copy()
    out[list(LOWER_INNER), 1] += px
    return out


def test_reference_maps_show_the_remembered_mouth_on_the_target_lips(closed):
    assert np.allclose(lip_affine(closed, closed), [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    assert not reference_maps(None, None, closed).any()
    wide = opened(closed, 10.0)
    assert mouth_area(wide) > MIN_OPEN_PX > mouth_area(closed)
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    maps = reference_maps(crop, wide, opened(closed, 6.0))
    assert maps.shape == (len(REFERENCE_CHANNELS), 128, 128) and maps.dtype == np.float32
    lips = polygon_mask(opened(closed, 6.0), [OUTER_MOUTH]) > 0
    shown = np.abs(maps[:3]).sum(0) > 0
    assert shown[lips].mean() > 0.95  # the remembered pixels fill the target's lips ...
    ys = np.flatnonzero(lips.any(1))
    assert not shown[: ys.min() - 8].any() and not shown[ys.max() + 8:].any()  # ... and only around them
    # the remembered inner mouth lands inside the target's (less open) inner mouth
    inner = maps[3] > 0.5
    target_inner = polygon_mask(opened(closed, 6.0), [INNER_MOUTH]) > 0
    assert inner.sum() > 20 and (inner & target_inner).sum() > 0.8 * inner.sum()


def test_memory_keeps_each_faces_widest_open_mouth(closed):
    mem = MouthMemory(capacity=2)
    crop = np.zeros((128, 128, 3), np.uint8)
    mem.observe(0, crop, closed)
    assert mem.get(0) is None  # a closed mouth shows nothing of the inside
    mem.observe(0, crop + 1, opened(closed, 8.0))
    mem.observe(0, crop + 2, opened(closed, 5.0))  # less open: the first stays
    assert mem.get(0).crop[0, 0, 0] == 1
    mem.observe(0, crop + 3, opened(closed, 12.0))
    assert mem.get(0).crop[0, 0, 0] == 3
    mem.observe(1, crop, closed)
    mem.observe(2, crop, opened(closed, 8.0))  # a third face: the least recently seen (0) falls out
    assert mem.get(0) is None and mem.get(2) is not None
    mem.clear()
    assert mem.get(2) is None


def test_reference_input_starts_as_the_net_it_widens_and_exports(tmp_path):
    import onnx
    import onnxruntime as ort

    from engines.refine_engine import RefineEngine, export_refine_onnx

    torch.manual_seed(0)
    net = RefineNet(RefineSpec(paint_mask=True)).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    wide = with_reference(net, len(REFERENCE_CHANNELS)).eval()
    assert wide.spec.n_reference == 4 and wide.spec.inputs[-1] == "reference"
    x, a, g = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 30), torch.rand(2, 4, 128, 128)
    ref = torch.rand(2, 4, 128, 128)
    with torch.no_grad():
        assert all(torch.equal(u, v) for u, v in zip(net(x, a, g), wide(x, a, g, ref), strict=True))
    wide.train()
    att, col = wide(x, a, g, ref)
    (col.mean() + att.mean()).backward()
    assert wide.e1[0].weight.grad[:, 28:].abs().sum() > 0  # the new channels learn
    with pytest.raises(ValueError):
        with_reference(wide, 3)
    loaded, _ = load_refine(save_refine(wide, tmp_path / "r.safetensors"))
    assert loaded.spec.n_reference == 4

    for p in wide.parameters():
        p.data.normal_(0, 0.05)
    wide.eval()
    path = export_refine_onnx(wide, tmp_path / "r.onnx")
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["image", "aus", "geometry", "reference"]
    rng = np.random.default_rng(0)
    feed = {"image": rng.uniform(-1, 1, (3, 3, 128, 128)).astype(np.float32),
            "aus": rng.uniform(0, 1, (3, 30)).astype(np.float32),
            "geometry": rng.uniform(0, 1, (3, 4, 128, 128)).astype(np.float32),
            "reference": rng.uniform(-1, 1, (3, 4, 128, 128)).astype(np.float32)}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["attention", "color"], feed)
    torch_engine = RefineEngine(wide, "torch")
    want = torch_engine.run(*feed.values())
    for have, ref_out in zip(got, want[:2], strict=True):
        assert np.abs(have - ref_out).max() < 1e-4
    # no reference is the same as zeros, and differs from a shown one
    none = torch_engine.run(feed["image"], feed["aus"], feed["geometry"])
    zeros = torch_engine.run(feed["image"], feed["aus"], feed["geometry"], np.zeros_like(feed["reference"]))
    assert np.array_equal(none[1], zeros[1]) and not np.allclose(none[1], want[1])


def test_pairs_take_a_reference_from_another_moment_of_the_clip(clip_frames):
    from train.refine_data import REFERENCE_GAP, PairMaker, PairMix, load_frames

    frames = load_frames([clip_frames])
    frames.mouth_px[:] = 0.0
    frames.mouth_px[0] = 500.0  # only frame 0 shows an open mouth
    far = int(np.argmax(np.abs(frames.index - frames.index[0])))
    assert abs(frames.index[far] - frames.index[0]) >= REFERENCE_GAP
    near = int(np.flatnonzero(np.abs(frames.index - frames.index[0]) < REFERENCE_GAP)[-1])
    maker = PairMaker(frames, mix=PairMix(reference=1.0), seed=0)
    ref = maker.reference_for(maker.identity_pair(far))
    assert ref is not None and ref.rgb.shape == (128, 128, 3) and ref.window.max() == 1.0
    assert maker.reference_for(maker.identity_pair(near)) is None  # too close: it would show the answer
    frames.mouth_px[0] = 0.0
    assert maker.reference_for(maker.identity_pair(far)) is None  # no open mouth in the clip
    frames.mouth_px[0] = 500.0
    assert any(maker().reference is not None for _ in range(20))


def _tracked(areas: dict[int, float], n: int, closed: np.ndarray) -> list:
    """Tracked frames whose crop landmarks open the mouth to about the given areas."""
    out = []
    for i in range(n):
        lm = opened(closed, areas.get(i, 0.0))
        face = SimpleNamespace(landmarks=lm, transform=SimpleNamespace(to_crop=lambda x: x))
        out.append((None, face))
    return out


def test_self_reenactment_reference_policies(closed):
    from rtanim.measure.reenact import REFERENCE_GAP, reference_frame

    tracked = _tracked({5: 10.0, 50: 12.0, 55: 3.0}, 80, closed)
    assert REFERENCE_GAP == 25
    assert reference_frame(tracked, 30, 40, "before") == 5  # 50 comes after the source
    assert reference_frame(tracked, 30, 40, "clip") == 5  # 50 is within the target's second
    assert reference_frame(tracked, 30, 10, "before") is None  # 5 is within the target's second
    assert reference_frame(tracked, 30, 10, "clip") == 50  # the widest, 55 is barely open
    assert reference_frame(tracked, 30, 40, "none") is None
    with pytest.raises(InputError):
        reference_frame(tracked, 30, 40, "after")


def test_refine_generator_shows_what_it_remembers(shared_data, tmp_path, closed):
    from rtanim.face.align import crop
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import load_rgb
    from rtanim.pipeline.generators import load_generator
    from rtanim.pipeline.jobs import FaceJob

    torch.manual_seed(0)
    net = with_reference(RefineNet(RefineSpec()), 4)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    gen = load_generator(str(save_refine(net, tmp_path / "r.safetensors")), "onnxruntime")
    img = load_rgb(shared_data / "stills" / "single_face.jpg")
    with FaceTracker(1, mode="image") as tr:
        face = tr.track(img)[0]
    job = FaceJob(face, crop(img, face.transform), {"AU25": 1.0, "AU26": 0.8})
    image, geometry, aus, _, ref, _ = gen.inputs(job)
    assert not ref.any()  # nothing seen yet
    out = gen.generate([job])[0]  # this face's mouth is open: remembered before it is generated
    assert mouth_area(face.transform.to_crop(face.landmarks)[:, :2]) >= MIN_OPEN_PX
    shown = gen.inputs(job)[4]
    assert gen.memory.get(face.face_id) is not None and np.abs(shown[:3]).sum() > 0
    seen = gen.engine.run(image[None], aus[None], geometry[None], shown[None])[1][0]
    blind = gen.engine.run(image[None], aus[None], geometry[None])[1][0]
    assert np.allclose(out.color, seen, atol=1e-5) and not np.allclose(out.color, blind, atol=1e-3)
    gen.forget()  # a new photo or clip: face ids may now be other people
    assert gen.memory.get(face.face_id) is None and not gen.inputs(job)[4].any()
