"""The refine model: geometry maps, network, ONNX graph, checkpoints, training pairs, CPU training,
the runtime generator and the self-reenactment test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtanim.errors import InputError
from rtanim.face.landmarks import INNER_MOUTH, polygon_mask
from rtanim.models.geometry import AUBasis
from rtanim.models.refine import (
    RefineNet,
    RefineSpec,
    compose_crop,
    geometry_maps,
    is_refine_checkpoint,
    load_refine,
    save_refine,
    shift,
    warp_image,
)
from train.refine_grow import with_flow_head, with_res_blocks, with_widths
from train.refine_prune import importance, narrowed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mean_face() -> np.ndarray:
    """The AU basis's mean landmarks: a plausible face in crop pixels."""
    return AUBasis.load().mean.astype(np.float64)


def test_geometry_maps_mark_mouth_and_eyes(mean_face):
    opened = mean_face.copy()
    lower = [317, 14, 87, 178, 88, 95, 324, 318, 402]  # lower inner lip
    opened[lower, 1] += 6.0  # open the mouth by 6 px
    geo = geometry_maps(opened, mean_face, None)
    assert geo.shape == (4, 128, 128) and geo.dtype == np.float32
    assert geo[0].sum() > polygon_mask(mean_face, [INNER_MOUTH]).sum() + 30  # the target mouth is open
    mouth_y = opened[list(INNER_MOUTH), 1].mean()
    ys = np.nonzero(geo[0])[0]
    assert abs(ys.mean() - mouth_y) < 4
    eyes_y = np.nonzero(geo[1])[0].mean()
    assert eyes_y < mouth_y - 20  # eyes above the mouth
    hidden = geometry_maps(opened, mean_face, None, source_hidden=(True, False))
    assert hidden[2].sum() == 0 and hidden[3].sum() == geo[3].sum()


def test_network_starts_as_the_warp_and_has_the_contract_shapes():
    net = RefineNet().eval()
    image = torch.rand(2, 3, 128, 128) * 2 - 1
    att, col = net(image, torch.rand(2, len(net.spec.au_codes)), torch.rand(2, 4, 128, 128))
    assert att.shape == (2, 1, 128, 128) and col.shape == (2, 3, 128, 128)
    assert float(att.min().detach()) >= 0 and float(att.max().detach()) <= 1
    assert torch.allclose(compose_crop(image, att, col), image, atol=1e-6)  # residual colour head at 0


def test_flow_head_starts_as_the_net_it_widens_and_shifts_as_compose_does():
    torch.manual_seed(3)
    net = RefineNet().eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    wide = with_flow_head(net).eval()
    assert wide.spec.flow and wide.spec.outputs == ("attention", "color", "flow")
    x, a, g = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 30), torch.rand(2, 4, 128, 128)
    with torch.no_grad():
        att, col = net(x, a, g)
        att2, col2, flow = wide(x, a, g)
    assert torch.equal(att, att2) and torch.equal(col, col2) and not flow.any()
    # the training-time shift (grid_sample) and the run time's cv2.remap agree on the convention
    rng = np.random.default_rng(0)
    f = ((rng.random((2, 128, 128)) - 0.5) * 0.05).astype(np.float32)
    img = (rng.random((128, 128, 3)) * 255).astype(np.float32)
    by_torch = shift(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(f)[None])[0].permute(1, 2, 0)
    assert np.abs(by_torch.numpy() - warp_image(img, f))[4:-4, 4:-4].max() < 0.05
    assert np.abs(img - warp_image(img, f)).mean() > 5  # the flow does move pixels


def test_deeper_bottleneck_starts_as_the_net_it_grows_and_then_learns():
    net = RefineNet().eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    deep = with_res_blocks(net, 4)
    assert deep.spec.n_res == 4 and len(deep.res) == 4
    x, a, g = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 30), torch.rand(2, 4, 128, 128)
    with torch.no_grad():
        before = net(x, a, g)
        after = deep.eval()(x, a, g)
    assert all(torch.equal(u, v) for u, v in zip(before, after, strict=True))
    # the new blocks get gradient (a zero second convolution still learns), so depth can be used
    deep.train()
    att, col = deep(x, a, g)
    (col.mean() + att.mean()).backward()
    assert deep.res[3].b.weight.grad.abs().sum() > 0
    assert with_res_blocks(deep, 4) is deep
    with pytest.raises(ValueError):
        with_res_blocks(deep, 2)


def test_wider_net_starts_as_the_net_it_widens_and_then_learns():
    torch.manual_seed(4)
    net = RefineNet(RefineSpec(widths=(8, 16, 16), n_res=2, flow=True)).eval()
    for p in net.parameters():  # a trained net: nothing at zero, FiLM and heads included
        p.data.normal_(0, 0.05)
    wide = with_widths(net, (12, 24, 20)).eval()
    assert wide.spec.widths == (12, 24, 20) and wide.spec.flow
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in net.parameters())
    x, a, g = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 30), torch.rand(2, 4, 128, 128)
    with torch.no_grad():
        before, after = net(x, a, g), wide(x, a, g)
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(before, after, strict=True))
    # the new channels reach the output through weights that learn from the first step
    wide.train()
    att, col, flow = wide(x, a, g)
    (col.mean() + att.mean() + flow.mean()).backward()
    assert wide.head.weight.grad[:, 8:].abs().sum() > 0
    assert wide.d2[0].weight.grad[:16, 16:20].abs().sum() > 0  # old outputs from the new x3 channels
    assert with_widths(wide, (12, 24, 20)) is wide
    with pytest.raises(ValueError):
        with_widths(wide, (12, 16, 20))


def test_narrowed_net_keeps_the_channels_it_uses():
    """Widen a trained net (the new channels feed nothing yet), then narrow it back: pruning must find
    exactly the old channels, so the narrow net computes what the original did."""
    torch.manual_seed(5)
    net = RefineNet(RefineSpec(widths=(8, 16, 16), n_res=2, flow=True)).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    wide = with_widths(net, (12, 24, 20)).eval()
    score = importance(wide)
    assert set(score) == {"e1", "e2", "x3", "h0", "h1", "d2", "d1"}
    assert float(score["e1"][8:].max()) == 0.0 and float(score["e1"][:8].min()) > 0.0
    back = narrowed(wide, (8, 16, 16)).eval()
    assert back.spec.widths == (8, 16, 16) and back.spec.flow
    x, a, g = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 30), torch.rand(2, 4, 128, 128)
    with torch.no_grad():
        assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(net(x, a, g), back(x, a, g), strict=True))
        small = narrowed(net, (6, 12, 12))(x, a, g)  # a real cut: runs, and stays near the original
    assert small[0].shape == (2, 1, 128, 128)
    assert sum(p.numel() for p in narrowed(net, (6, 12, 12)).parameters()) < sum(p.numel() for p in net.parameters())
    assert narrowed(net, (8, 16, 16)) is net
    with pytest.raises(ValueError):
        narrowed(net, (8, 20, 16))


def test_fixed_batch_is_learned():
    """A few Adam steps on one batch must cut the loss: the losses and the network can learn."""
    from train.refine_losses import losses

    torch.manual_seed(0)
    net = RefineNet(RefineSpec(widths=(8, 16, 16), n_res=1))
    target = torch.rand(2, 3, 128, 128) * 2 - 1
    warped = target.clone()
    warped[:, :, 70:90, 50:80] = 0.6  # a "stretched lip" patch the net must repaint
    weight = torch.ones(2, 1, 128, 128)
    weight[:, :, 66:94, 46:84] = 5.0
    b = {"warped": warped, "target": target, "geometry": torch.zeros(2, 4, 128, 128),
         "aus": torch.zeros(2, len(net.spec.au_codes)), "weight": weight}
    region = torch.ones(1, 1, 128, 128)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        out = losses(net, b, region)
        first = float(out["l1"].detach()) if first is None else first
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(losses(net, b, region)["l1"].detach()) < 0.8 * first


@pytest.mark.parametrize(("flow", "paint_mask"), [(False, False), (True, False), (False, True), (False, "small"),
                                                  (False, "keep"), (False, "overlap"), (True, "mirror"), (False, "detail"),
                                                  (False, "spare"), (False, "stretch")])
def test_onnx_graph_inputs_outputs_and_parity(tmp_path, flow, paint_mask):
    import onnx
    import onnxruntime as ort

    from engines.refine_engine import INPUTS, OUTPUTS, RefineEngine, export_refine_onnx

    torch.manual_seed(1)
    net = RefineNet(RefineSpec(flow=flow, paint_mask=bool(paint_mask), paint_min=0.25 if paint_mask else 0.0,
                               paint_small=4 if paint_mask == "small" else 0,
                               paint_keep=150.0 if paint_mask in ("keep", "overlap", "stretch") else 0.0,
                               paint_keep_stretch=1.2 if paint_mask == "stretch" else 0.0,
                               paint_keep_overlap=0.6 if paint_mask == "overlap" else 0.0,
                               mirror_average=paint_mask == "mirror",
                               detail_sigma=2.5 if paint_mask in ("detail", "spare") else 0.0,
                               detail_spare_mouth=paint_mask == "spare")).eval()
    for p in net.parameters():  # non-trivial weights (the head starts at zero)
        p.data.normal_(0, 0.05)
    path = export_refine_onnx(net, tmp_path / "refine.onnx")
    proto = onnx.load(str(path))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert list(dims) == list(INPUTS)
    n_geo = 5 if paint_mask == "stretch" else 4  # the source's own mouth, for the keep's stretch gate
    assert dims["image"] == ["N", 3, 128, 128] and dims["geometry"] == ["N", n_geo, 128, 128]
    assert dims["aus"] == ["N", len(net.spec.au_codes)]
    assert [o.name for o in proto.graph.output] == list(OUTPUTS) + (["flow"] if flow else [])
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["rtanim.model"] == "refine"
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"Conv", "LeakyRelu", "Concat", "Resize", "Gemm", "Mul", "Add", "Split", "Unsqueeze", "Sigmoid",
                   "Slice", "Clip", "DepthToSpace", "SpaceToDepth", "Reshape", "Transpose", "Constant", "Shape",
                   "Gather", "Cast", "Div", "Sub", "Identity", "Tanh", "Abs", "Max", "MaxPool", "AveragePool",
                   "ReduceSum"}, ops  # plain ops TensorRT builds
    assert ("MaxPool" in ops) == bool(paint_mask)
    assert "ReduceSum" in ops  # keep_greyscale's chroma
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 128, 128)).astype(np.float32)
    a = np.random.default_rng(1).uniform(0, 1, (3, len(net.spec.au_codes))).astype(np.float32)
    g = np.random.default_rng(2).uniform(0, 1, (3, n_geo, 128, 128)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(net.spec.outputs), {"image": x, "aus": a, "geometry": g})
    want = RefineEngine(net, "torch").run(x, a, g)
    assert (want[2] is not None) == flow
    for have, ref in zip(got, want, strict=False):
        assert np.abs(have - ref).max() < 1e-4


def test_painted_colour_keeps_the_warps_fine_detail():
    """RefineSpec.detail_sigma: below the sigma the colour is the net's, above it the warped crop's;
    where the net keeps the crop nothing changes, and a flat paint gets the crop's texture."""
    from rtanim.models.refine_colour import gaussian_blur, keep_warp_detail

    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 128, 128, generator=g) * 1.2 - 0.6
    assert torch.equal(keep_warp_detail(image, image, 2.5), image)
    flat = torch.full_like(image, 0.1)  # an L1 net's smooth guess
    out = keep_warp_detail(image, flat, 2.5)
    assert torch.allclose(out, 0.1 + image - gaussian_blur(image, 2.5), atol=1e-5)
    assert torch.allclose(gaussian_blur(torch.full((1, 3, 40, 40), 0.3), 2.5, 3, 40), torch.full((1, 3, 40, 40), 0.3))
    from dataclasses import replace

    spec = replace(RefineSpec(), detail_sigma=2.5)
    assert RefineSpec.from_json(spec.to_json()).detail_sigma == 2.5
    assert RefineSpec.from_json(RefineSpec().to_json().replace(', "detail_sigma": 0.0', "")).detail_sigma == 0.0
    torch.manual_seed(3)
    net = RefineNet(spec).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    geo = torch.rand(2, 4, 128, 128, generator=g)
    aus = torch.rand(2, len(spec.au_codes), generator=g)
    plain = RefineNet(RefineSpec()).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        (a1, c1), (a0, c0) = net(image, aus, geo), plain(image, aus, geo)
    assert torch.equal(a1, a0) and not torch.allclose(c1, c0)  # the same attention, the colour's detail replaced
    assert torch.allclose(c1, keep_warp_detail(image, c0, 2.5), atol=1e-5)
    # detail_spare_mouth: inside the target's inner mouth (geometry channel 0) the net's own detail
    spared = RefineNet(replace(spec, detail_spare_mouth=True)).eval()
    spared.load_state_dict(net.state_dict())
    assert RefineSpec.from_json(spared.spec.to_json()).detail_spare_mouth
    geo[:, 0] = 0.0
    geo[:, 0, 70:100, 40:90] = 1.0
    with torch.no_grad():
        c2, c1, c0 = spared(image, aus, geo)[1], net(image, aus, geo)[1], plain(image, aus, geo)[1]
    inside = geo[:, 0:1].expand_as(c2) > 0.5
    assert torch.equal(c2[inside], c0[inside]) and torch.equal(c2[~inside], c1[~inside])
    assert not torch.equal(c1[inside], c0[inside])


def test_paint_mask_paints_only_what_the_warp_changed(mean_face):
    """With RefineSpec.paint_mask the composite equals the warped crop wherever the warp left mouth
    and eyes alone, whatever the weights; where it opened the mouth the net paints as the same
    weights would unmasked."""
    from dataclasses import replace

    from rtanim.models.refine import paint_region

    torch.manual_seed(4)
    free = RefineNet().eval()
    for p in free.parameters():
        p.data.normal_(0, 0.05)
    masked = RefineNet(replace(free.spec, paint_mask=True)).eval()
    masked.load_state_dict(free.state_dict())
    assert RefineSpec.from_json(masked.spec.to_json()).paint_mask
    assert not RefineSpec.from_json(free.spec.to_json().replace(', "paint_mask": false', "")).paint_mask  # old files
    opened = mean_face.copy()
    opened[[317, 14, 87, 178, 88, 95, 324, 318, 402], 1] += 6.0  # the warp opened the mouth by 6 px
    g = torch.from_numpy(geometry_maps(opened, mean_face, None))[None]
    region = paint_region(g)[0, 0].numpy()
    mouth = polygon_mask(opened, [INNER_MOUTH]) > 0.5
    assert (region[mouth] == 1).all()  # the new cavity and the lips around it are paintable ...
    eyes = geometry_maps(opened, mean_face, None)[1] > 0
    assert region[eyes].max() == 0 and region[:40].max() == 0  # ... the unchanged eyes and brows not
    x, a = torch.rand(1, 3, 128, 128) * 2 - 1, torch.rand(1, len(free.spec.au_codes))
    with torch.no_grad():
        att_free, col = free(x, a, g)
        att, col2 = masked(x, a, g)
        still, _ = masked(x, a, torch.from_numpy(geometry_maps(mean_face, mean_face, None))[None])
    assert torch.equal(col, col2)
    outside = torch.from_numpy(region == 0)
    assert (att[0, 0][outside] == 1).all() and (att_free[0, 0][outside] < 1).all()
    inside = torch.from_numpy(region == 1)
    assert torch.allclose(att[0, 0][inside], att_free[0, 0][inside])
    assert torch.equal(compose_crop(x, att, col)[0][:, outside], x[0][:, outside])
    assert (still == 1).all()  # nothing changed: nothing painted, the output is the warp's


def test_paint_min_ignores_a_sliding_lip_line_but_not_an_opening(mean_face):
    """With a threshold (RefineSpec.paint_min) a closed mouth whose lip line only slides by a
    fraction of a pixel opens no paint region; a mouth the warp opened still opens it fully; the
    spec's reach and threshold survive the checkpoint's JSON."""
    from dataclasses import replace

    from rtanim.models.refine import paint_region

    spec = replace(RefineSpec(), paint_mask=True, paint_grow=(8, 4), paint_min=0.25)
    back = RefineSpec.from_json(spec.to_json())
    assert back.paint_grow == (8, 4) and back.paint_min == 0.25
    slid = mean_face.copy()
    slid[list(INNER_MOUTH), 0] += 0.4  # the inner lip line slides sideways by 0.4 px
    g = torch.from_numpy(geometry_maps(slid, mean_face, None))[None]
    assert paint_region(g)[0, 0].max() > 0.3  # without a threshold this opens paint around the mouth ...
    assert paint_region(g, grow_px=(8, 4), min_change=0.25).max() == 0  # ... with one, nothing
    opened = mean_face.copy()
    opened[[317, 14, 87, 178, 88, 95, 324, 318, 402], 1] += 6.0
    g = torch.from_numpy(geometry_maps(opened, mean_face, None))[None]
    region = paint_region(g, grow_px=(8, 4), min_change=0.25)[0, 0].numpy()
    assert (region[polygon_mask(opened, [INNER_MOUTH]) > 0.5] == 1).all()
    assert region[:40].max() == 0


def test_mirror_average_is_the_average_of_the_face_and_its_mirror():
    """RefineSpec.mirror_average: the output is the average of the two composites (the face and its
    mirror image with sided AUs swapped, painted back), so it paints the mirror of a mirrored face
    exactly; the weights are the plain net's, and the flag survives the checkpoint's JSON."""
    from dataclasses import replace

    from rtanim.models.refine import mirrored_aus

    torch.manual_seed(5)
    plain = RefineNet(RefineSpec(paint_mask=True, paint_min=0.25)).eval()
    for p in plain.parameters():
        p.data.normal_(0, 0.05)
    both = RefineNet(replace(plain.spec, mirror_average=True)).eval()
    both.load_state_dict(plain.state_dict())
    assert RefineSpec.from_json(both.spec.to_json()).mirror_average
    assert not RefineSpec.from_json(plain.spec.to_json().replace(', "mirror_average": false', "")).mirror_average
    codes = plain.spec.au_codes
    swap = mirrored_aus(codes)
    assert codes[swap[codes.index("AU12L")]] == "AU12R" and codes[swap[codes.index("AU25")]] == "AU25"
    x, a, g = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, len(codes)), torch.rand(2, 4, 128, 128)

    def flip(t: torch.Tensor) -> torch.Tensor:
        return torch.flip(t, dims=[3])

    with torch.no_grad():
        att, col = both(x, a, g)
        a1, c1 = plain(x, a, g)
        a2, c2 = (flip(t) for t in plain(flip(x), a[:, swap], flip(g)))
        seen = both(flip(x), a[:, swap], flip(g))
    comp = compose_crop(x, att, col)
    want = 0.5 * (compose_crop(x, a1, c1) + compose_crop(x, a2, c2))
    assert torch.allclose(comp, want, atol=1e-3)
    assert torch.allclose(flip(seen[0]), att, atol=1e-6) and torch.allclose(flip(seen[1]), col, atol=1e-3)


def test_paint_small_reach_follows_the_size_of_the_mouths_change(mean_face):
    """With RefineSpec.paint_small, lips that part by two pixels get a slit painted, not both lips;
    a wide opening gets the full reach; the spec survives the checkpoint's JSON."""
    from dataclasses import replace

    from rtanim.models.refine import paint_region

    spec = replace(RefineSpec(), paint_mask=True, paint_min=0.25, paint_small=4, paint_area=(20.0, 100.0))
    back = RefineSpec.from_json(spec.to_json())
    assert back.paint_small == 4 and back.paint_area == (20.0, 100.0)
    assert RefineSpec.from_json(RefineSpec().to_json().replace(', "paint_small": 0', "")).paint_small == 0  # old files

    def regions(lift: float) -> tuple[np.ndarray, np.ndarray]:
        opened = mean_face.copy()
        opened[[317, 14, 87, 178, 88, 95, 324, 318, 402], 1] += lift
        g = torch.from_numpy(geometry_maps(opened, mean_face, None))[None]
        full = paint_region(g, min_change=0.25)[0, 0].numpy()
        small = paint_region(g, min_change=0.25, small_px=4, area=(20.0, 100.0))[0, 0].numpy()
        return full, small

    full, small = regions(2.0)  # lips part by two pixels
    assert small.sum() < 0.5 * full.sum() and small.max() == full.max() > 0.5 and (small <= full).all()
    full, small = regions(8.0)  # a wide opening
    assert np.array_equal(full, small)


def test_a_greyscale_photo_gets_no_painted_colour():
    """keep_greyscale: a black-and-white crop comes out grey whatever the net paints; a colour crop's
    paint is untouched; a faintly tinted one keeps a share of its chroma."""
    from rtanim.models.refine_colour import GREY_CHROMA, keep_greyscale

    torch.manual_seed(0)
    net = RefineNet(RefineSpec(paint_mask=False)).eval()
    for p in net.parameters():  # a head that paints colour everywhere
        p.data.normal_(0, 0.05)
    grey = torch.rand(2, 1, 128, 128).expand(2, 3, 128, 128) * 2 - 1
    geometry, aus = torch.zeros(2, 4, 128, 128), torch.rand(2, len(net.spec.au_codes))
    with torch.no_grad():
        _, color = net(grey, aus, geometry)
        assert (color.max(1).values - color.min(1).values).max() < 1e-5
        colour = torch.rand(2, 3, 128, 128) * 2 - 1
        painted = torch.clamp(colour + 0.3, -1, 1)
        assert torch.equal(keep_greyscale(colour, painted), painted)
        faint = grey + torch.tensor([GREY_CHROMA / 2, 0.0, -GREY_CHROMA / 2]).view(1, 3, 1, 1) * 1.5
        spread = keep_greyscale(faint, painted)
        chroma = (spread - spread.mean(1, keepdim=True)).abs().mean()
        assert 0.2 < chroma / (painted - painted.mean(1, keepdim=True)).abs().mean() < 0.8


def test_paint_keep_leaves_a_carried_open_mouth_to_the_warp(mean_face):
    """RefineSpec.paint_keep: where the source shows a real open mouth the target still holds, the
    net may paint only its rim; a slit of parted lips is repainted as before."""
    from dataclasses import replace

    from rtanim.face.landmarks import INNER_MOUTH, polygon_mask
    from rtanim.models.refine import paint_region

    spec = replace(RefineSpec(), paint_mask=True, paint_min=0.25, paint_keep=150.0)
    assert RefineSpec.from_json(spec.to_json()).paint_keep == 150.0
    assert RefineSpec.from_json(RefineSpec().to_json().replace(', "paint_keep": 0.0', "")).paint_keep == 0.0
    lower = [317, 14, 87, 178, 88, 95, 324, 318, 402]

    def regions(source_lift: float, more: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source, target = mean_face.copy(), mean_face.copy()
        source[lower, 1] += source_lift
        target[lower, 1] += source_lift + more
        g = torch.from_numpy(geometry_maps(target, source, None))[None]
        whole = paint_region(g, min_change=0.25)[0, 0].numpy()
        kept = paint_region(g, min_change=0.25, keep_px=150.0)[0, 0].numpy()
        return whole, kept, polygon_mask(source, [INNER_MOUTH]) > 0.99

    whole, kept, inside = regions(14.0, 4.0)  # a wide-open mouth opens further
    assert inside.sum() > 300
    assert whole[inside].mean() > 0.7 and kept[inside].mean() < 0.5 * whole[inside].mean() and (kept <= whole).all()
    assert kept.max() > 0.9  # the new gap and the lips around it are still painted
    whole, kept, _ = regions(2.0, 8.0)  # a slit that opens: nothing real to keep
    assert np.array_equal(whole, kept)


def test_paint_keep_overlap_keeps_a_reshaped_mouth_and_repaints_a_jaw_that_moved_far(mean_face):
    """RefineSpec.paint_keep_overlap: the carried interior is kept when it and the target's inner mouth
    overlap enough (a lip command on an open mouth), and painted when the opening changed a lot."""
    from dataclasses import replace

    from rtanim.face.landmarks import INNER_MOUTH, polygon_mask
    from rtanim.models.refine import paint_region

    spec = replace(RefineSpec(), paint_mask=True, paint_keep=150.0, paint_keep_overlap=0.6)
    assert RefineSpec.from_json(spec.to_json()).paint_keep_overlap == 0.6
    assert RefineSpec.from_json(RefineSpec().to_json().replace(', "paint_keep_overlap": 0.0', "")).paint_keep_overlap == 0.0
    lower = [317, 14, 87, 178, 88, 95, 324, 318, 402]

    def regions(more: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        source, target = mean_face.copy(), mean_face.copy()
        source[lower, 1] += 14.0
        target[lower, 1] += 14.0 + more
        g = torch.from_numpy(geometry_maps(target, source, None))[None]
        any_overlap = paint_region(g, min_change=0.25, keep_px=150.0)[0, 0].numpy()
        gated = paint_region(g, min_change=0.25, keep_px=150.0, keep_overlap=0.6)[0, 0].numpy()
        iou = float((g[0, 0] * g[0, 2]).sum() / (g[0, 0].sum() + g[0, 2].sum() - (g[0, 0] * g[0, 2]).sum()))
        return any_overlap, gated, polygon_mask(source, [INNER_MOUTH]) > 0.99, iou

    any_overlap, gated, inside, iou = regions(3.0)  # opens a little further: most of it still overlaps
    assert iou > 0.6 and np.allclose(gated, any_overlap) and gated[inside].mean() < 0.5
    any_overlap, gated, inside, iou = regions(30.0)  # the jaw drops far: the teeth would land elsewhere
    assert iou < 0.45 and any_overlap[inside].mean() < 0.5 and gated[inside].mean() > 0.7


def test_paint_keep_stretch_repaints_a_mouth_the_warp_stretched_open(mean_face):
    """RefineSpec.paint_keep_stretch: the warp maps the source's inner lips onto the target's, so the
    carried interior covers the target's opening whether the source showed teeth that wide or only a
    slit; the source's own opening (a fifth geometry channel) tells the two apart."""
    from dataclasses import replace

    from rtanim.face.landmarks import INNER_MOUTH, polygon_mask
    from rtanim.models.refine import paint_region

    spec = replace(RefineSpec(), paint_mask=True, paint_keep=150.0, paint_keep_stretch=1.2)
    assert RefineSpec.from_json(spec.to_json()).paint_keep_stretch == 1.2 and spec.geometry_inputs == 5
    assert RefineSpec().geometry_inputs == 4
    lower = [317, 14, 87, 178, 88, 95, 324, 318, 402]
    target = mean_face.copy()
    target[lower, 1] += 24.0
    inside = polygon_mask(target, [INNER_MOUTH]) > 0.99

    def regions(source_open: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(no keep, kept by area alone, kept with the stretch gate) for a source this far open, warped
        to ``target``."""
        source = mean_face.copy()
        source[lower, 1] += source_open
        g = geometry_maps(target, source, None, own_mouth=True)
        assert g.shape == (5, 128, 128) and np.array_equal(g[4], polygon_mask(source, [INNER_MOUTH]))
        near = target.copy()
        near[lower, 1] -= 2.0  # as the warp carries it: the source's interior stretched over the target's opening
        g[2] = polygon_mask(near, [INNER_MOUTH])  # (all but a 2 px band, where the paint region grows from)
        g = torch.from_numpy(g)[None]
        whole = paint_region(g[:, :4], min_change=0.25)[0, 0].numpy()
        by_area = paint_region(g[:, :4], min_change=0.25, keep_px=150.0)[0, 0].numpy()
        gated = paint_region(g, min_change=0.25, keep_px=150.0, keep_stretch=1.2)[0, 0].numpy()
        return whole, by_area, gated

    whole, by_area, gated = regions(22.0)  # the source shows about that opening: its own teeth are kept
    assert np.array_equal(gated, by_area) and by_area[inside].mean() < 0.5 * whole[inside].mean()
    whole, by_area, gated = regions(7.0)  # a narrow opening pulled wide: smear, painted
    assert by_area[inside].mean() < 0.5 * whole[inside].mean() and np.allclose(gated, whole)
    hidden = geometry_maps(target, mean_face, None, source_hidden=(True, False), own_mouth=True)
    assert not hidden[4].any()  # a blanked source mouth is no opening to keep
    net = RefineNet(replace(spec, widths=(8, 16, 16))).eval()  # the convolutions read the first four channels
    x, a = torch.rand(1, 3, 128, 128) * 2 - 1, torch.rand(1, 30)
    g = torch.from_numpy(geometry_maps(target, mean_face, None, own_mouth=True))[None]
    with torch.no_grad():
        att, col = net(x, a, g)
    assert att.shape == (1, 1, 128, 128) and col.shape == (1, 3, 128, 128)


def test_checkpoint_roundtrip_and_bad_files(tmp_path):
    net = RefineNet()
    path = save_refine(net, tmp_path / "r.safetensors", extra={"training": {"steps": 7}})
    assert is_refine_checkpoint(path)
    back, extra = load_refine(path)
    assert extra["training"]["steps"] == 7
    for k, v in net.state_dict().items():
        assert torch.allclose(back.state_dict()[k], v.half().float())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert not is_refine_checkpoint(bad)
    with pytest.raises(InputError):
        load_refine(bad)


# ----------------------------------------------------------------------------- with the shared data


def test_pairs_of_every_kind(clip_frames):
    from train.refine_data import PairMaker, PairMix, load_frames, region_weight

    frames = load_frames([clip_frames])
    assert len(frames) >= 10 and (frames.index >= 0).all()
    maker = PairMaker(frames, seed=0)
    s, t = 0, len(frames) - 1
    video = maker.video_pair(s, t)
    assert video.warped.shape == (128, 128, 3) and video.warped.dtype == np.uint8
    assert np.array_equal(video.target, frames.images[t])
    # the warp to the target's landmarks brings the source closer to the target than the source itself
    w = region_weight(frames.landmarks[t]) > 0
    assert np.abs(video.warped.astype(int) - video.target)[w].mean() <= \
        np.abs(frames.images[s].astype(int) - video.target)[w].mean() + 0.5
    assert maker.video_pair(s, t, basis=True).flow is None  # no flow head to supervise: not computed
    maker = PairMaker(frames, mix=PairMix(residual_flow=True), seed=0)
    assert maker.video_pair(s, t, basis=False).flow is None  # warped to the real landmarks already
    basis = maker.video_pair(s, t, basis=True)
    assert basis.flow.shape == (2, 128, 128) and basis.flow.dtype == np.float32
    # the residual flow's convention: at a real target control landmark it points back to where
    # the AU basis put that landmark (what the flow head must learn to undo)
    from rtanim.models.refine import warp_inputs

    _, _, _, moved = warp_inputs(maker.warp, frames.images[s], frames.landmarks[s], frames.aus[s], frames.aus[t])
    ctrl = maker.basis.controls
    real = frames.landmarks[t, ctrl]
    inside = np.all((real > 2) & (real < 125), axis=1)
    xi, yi = np.round(real[inside]).astype(int).T
    back = real[inside] + basis.flow[:, yi, xi].T * 64.0
    assert np.abs(back - moved[ctrl][inside]).mean() < 0.6 * np.abs(real[inside] - moved[ctrl][inside]).mean() + 0.3
    ident = maker.identity_pair(3)
    assert np.array_equal(ident.warped, ident.target)
    frames.mouth_px[5] = 1000.0  # treat frame 5's mouth as open: the cycle pair must hide it
    cyc = maker.cycle_pair(5)
    assert cyc.geometry[2].sum() == 0 and cyc.geometry[0].sum() > 0
    assert {maker().kind for _ in range(40)} == {"video", "cycle", "identity"}
    # every pair carries the self-reenactment test's boxes on its real target: lips below the eyes
    from train.refine_data import score_boxes

    assert np.array_equal(video.boxes, score_boxes(frames.landmarks[t]))
    for pair in (video, ident, cyc):
        mouth, eyes = pair.boxes.astype(bool)
        assert mouth.sum() > 100 and eyes.sum() > 100 and not (mouth & eyes).any()
        assert np.argwhere(mouth)[:, 0].min() > np.argwhere(eyes)[:, 0].max()


def test_closing_pairs_show_an_open_mouth_the_net_must_close(clip_frames):
    """PairMix.closing: video pairs with a closed-mouthed target prefer an open-mouthed source."""
    from train.refine_data import PairMaker, PairMix, load_frames

    frames = load_frames([clip_frames])
    frames.mouth_px[:] = 50.0  # closed ...
    opened = np.arange(len(frames)) % 3 == 0
    frames.mouth_px[opened] = 400.0  # ... but every third frame

    def sources(closing: float) -> float:
        maker = PairMaker(frames, mix=PairMix(closing=closing, max_rigid_px=1e9), seed=0)
        closed = np.flatnonzero(~opened)
        return float(np.mean([opened[maker._source(int(t))] for t in closed for _ in range(3)]))

    assert sources(1.0) > 0.9 and sources(0.0) < 0.6
    # the mix report counts them by the frames' own mouths, as the preference draws them
    from train.refine_data import mix_report

    closing = mix_report(frames, PairMaker(frames, mix=PairMix(closing=1.0, max_rigid_px=1e9), seed=1), n=120)
    frames.mouth_px[:] = 50.0
    none_open = mix_report(frames, PairMaker(frames, mix=PairMix(closing=1.0, max_rigid_px=1e9), seed=1), n=120)
    assert closing["pairs_closing_mouth"] > 0.15 and none_open["pairs_closing_mouth"] == 0.0


def test_mirrored_pairs_swap_sides_and_undo_themselves(clip_frames):
    from rtanim.expression.aus import EXTENDED_CODES
    from train.refine_data import PairMaker, PairMix, load_frames, mirror

    frames = load_frames([clip_frames])
    maker = PairMaker(frames, mix=PairMix(residual_flow=True), seed=0)
    p = maker.video_pair(0, len(frames) - 1, basis=True)
    p.aus[EXTENDED_CODES.index("AU12L")], p.aus[EXTENDED_CODES.index("AU12R")] = 0.9, 0.1
    m = mirror(p)
    assert np.array_equal(m.warped, p.warped[:, ::-1]) and np.array_equal(m.target, p.target[:, ::-1])
    assert np.array_equal(m.geometry, p.geometry[..., ::-1]) and np.array_equal(m.boxes, p.boxes[..., ::-1])
    assert np.array_equal(m.weight, p.weight[:, ::-1])
    assert m.aus[EXTENDED_CODES.index("AU12L")] == p.aus[EXTENDED_CODES.index("AU12R")] == np.float32(0.1)
    assert m.aus[EXTENDED_CODES.index("AU25")] == p.aus[EXTENDED_CODES.index("AU25")]
    assert np.array_equal(m.flow[0], -p.flow[0][:, ::-1]) and np.array_equal(m.flow[1], p.flow[1][:, ::-1])
    back = mirror(m)
    for k in ("warped", "target", "geometry", "aus", "weight", "boxes", "flow", "target_landmarks"):
        assert np.allclose(getattr(back, k), getattr(p, k)), k
    mixed = PairMaker(frames, mix=PairMix(mirror=1.0), seed=3)()
    assert mixed.warped.flags["C_CONTIGUOUS"] and mixed.geometry.flags["C_CONTIGUOUS"]


def test_box_psnr_term_is_the_tests_per_pair_psnr():
    """The term's dB figure is the mean of each pair's PSNR in its boxes (as the self-reenactment
    test averages it), and its gradient favours the pair that is nearly right."""
    from train.refine_losses import PSNR_FLOOR, box_psnr_loss

    target = torch.zeros(2, 3, 16, 16)
    boxes = torch.zeros(2, 2, 16, 16)
    boxes[:, 0, 8:12, 4:12] = 1
    boxes[:, 1, 2:5, 2:14] = 1
    out = target.clone()
    out[0] += 0.02  # nearly right
    out[1] += 0.4  # far off
    out.requires_grad_(True)
    loss, db = box_psnr_loss(out, target, boxes)
    want = np.mean([-10 * np.log10((e * e + PSNR_FLOOR) / 4) for e in (0.02, 0.02, 0.4, 0.4)])
    assert abs(float(db) - want) < 1e-3
    loss.backward()
    g = out.grad.abs().sum((1, 2, 3))
    assert g[0] > g[1]  # log error: the same relative gain is worth as much, so small errors pull harder
    assert float(out.grad[:, :, 0, 0].abs().sum()) == 0  # nothing outside the boxes


def test_training_device_is_one_line_when_missing(tmp_path, capsys):
    """--device names where the net trains; one this machine lacks is one line and exit 2, before any data is read."""
    from train.refine_train import main

    args = ["--data", str(tmp_path / "no-data"), "--run", str(tmp_path / "run")]
    assert main([*args, "--device", "tpu"]) == 2
    assert "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CUDA requested but not available" in err
    assert not (tmp_path / "run").exists()


def test_short_training_run_resumes_and_bad_data_is_one_line(clip_frames, tmp_path):
    from train.checkpoints import training_totals  # noqa: F401 - the GAN trainer's totals reader is separate
    from train.refine_train import main

    run = tmp_path / "run"
    args = ["--data", str(clip_frames), "--run", str(run), "--batch", "2", "--held-out", "0", "--workers", "0",
            "--widths", "8", "16", "16"]
    assert main([*args, "--steps", "3"]) == 0
    _, extra = load_refine(run / "refine.safetensors")
    assert extra["training"]["steps"] == 3 and extra["training"]["runs"] == 1
    assert main([*args, "--steps", "2"]) == 0  # resumes from state.safetensors
    _, extra = load_refine(run / "refine.safetensors")
    assert extra["training"]["steps"] == 5 and extra["training"]["runs"] == 2
    assert main([*args, "--steps", "2", "--flow"]) == 0  # resumes and grows a residual flow head
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.flow and extra["training"]["steps"] == 7 and extra["training"]["flow_from_step"] == 5
    assert main([*args, "--steps", "1"]) == 0  # and resumes with it
    assert main([*args, "--steps", "1", "--paint-mask"]) == 0  # gates the attention from here on
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.paint_mask and net.spec.flow and extra["training"]["paint_mask_from_step"] == 8
    assert main([*args, "--steps", "1", "--paint-mask", "--paint-grow", "8", "4", "--paint-min", "0.25"]) == 0
    net, extra = load_refine(run / "refine.safetensors")  # a tighter region, the same weights and moments
    assert net.spec.paint_grow == (8, 4) and net.spec.paint_min == 0.25
    assert extra["training"]["paint_mask_from_step"] == 8
    assert extra["training"]["paint_regions"][-1] == {"from_step": 9, "grow": [8, 4], "min": 0.25, "small": 0,
                                                      "area": [20.0, 100.0], "keep": 0.0, "keep_overlap": 0.0,
                                                      "keep_stretch": 0.0}
    assert main([*args, "--steps", "2", "--adv", "0.02"]) == 0  # the adversarial stage on top ...
    from train.refine_adv import load_critic

    _, _, critic_steps = load_critic(run / "critic.safetensors", 1e-4)
    assert critic_steps == 2
    assert main([*args, "--steps", "1", "--adv", "0.02"]) == 0  # ... resumes with its critic
    assert load_critic(run / "critic.safetensors", 1e-4)[2] == 3
    _, extra = load_refine(run / "refine.safetensors")
    assert extra["training"]["steps"] == 13 and extra["training"]["adv_from_step"] == 10
    assert main([*args, "--steps", "1", "--l2", "10"]) == 0  # a squared-error term, recorded when it changes
    assert main([*args, "--steps", "1", "--l2", "10"]) == 0
    assert main([*args, "--steps", "1"]) == 0
    _, extra = load_refine(run / "refine.safetensors")
    assert extra["training"]["l2_terms"] == [{"from_step": 13, "weight": 10.0}, {"from_step": 15, "weight": 0.0}]
    # the per-pair PSNR term, mirrored pairs and a small-change reach, recorded likewise
    assert main([*args, "--steps", "1", "--psnr", "0.1", "--mirror", "0.5", "--closing", "0.5", "--carry", "0.5",
                 "--paint-mask", "--paint-small", "4"]) == 0
    assert main([*args, "--steps", "1"]) == 0
    _, extra = load_refine(run / "refine.safetensors")
    assert extra["training"]["psnr_terms"] == [{"from_step": 16, "weight": 0.1}, {"from_step": 17, "weight": 0.0}]
    assert extra["training"]["mirror"] == [{"from_step": 16, "share": 0.5}, {"from_step": 17, "share": 0.0}]
    assert extra["training"]["paint_regions"][-1]["small"] == 4
    assert extra["training"]["closing"] == [{"from_step": 16, "share": 0.5}, {"from_step": 17, "share": 0.0}]
    assert extra["training"]["carry"] == [{"from_step": 16, "share": 0.5}, {"from_step": 17, "share": 0.0}]
    assert "psnr" in (run / "metrics.jsonl").read_text().splitlines()[-1]
    assert main([*args, "--steps", "1", "--n-res", "3"]) == 0  # a deeper bottleneck, the same function at first
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.n_res == 3 and extra["training"]["res_blocks"] == [{"from_step": 18, "n_res": 3}]
    assert main([*args, "--steps", "1", "--n-res", "2"]) == 2  # grows, never shrinks
    assert main([*args, "--steps", "1", "--reference", "0.5"]) == 0  # a remembered mouth as a new input
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.n_reference == 4 and extra["training"]["reference_from_step"] == 19
    assert main([*args, "--steps", "1"]) == 0  # resumes with it (shown at 0.75 by default)
    assert (run / "metrics.jsonl").read_text().count("\n") >= 2
    # a weight average: refine.safetensors holds it, refine_raw the last step's own, and it resumes
    from safetensors import safe_open

    def updates() -> int:
        with safe_open(str(run / "state.safetensors"), "pt") as f:
            return int(f.metadata()["ema_updates"])

    def weights(name: str) -> dict[str, torch.Tensor]:
        return load_refine(run / name)[0].state_dict()

    assert main([*args, "--steps", "1", "--ema", "0.5"]) == 0
    first, extra = weights("refine.safetensors"), load_refine(run / "refine.safetensors")[1]
    assert extra["training"]["ema"] == [{"from_step": 21, "decay": 0.5}] and updates() == 1
    assert all(torch.equal(v, weights("refine_raw.safetensors")[k]) for k, v in first.items())  # one step: itself
    assert main([*args, "--steps", "1", "--ema", "0.5"]) == 0
    assert updates() == 2  # resumed, not restarted
    averaged, raw = weights("refine.safetensors"), weights("refine_raw.safetensors")
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw)
    assert all(torch.allclose(averaged[k], 0.5 * (first[k] + raw[k]), atol=2e-3) for k in raw)  # FP16 files
    assert main([*args, "--steps", "1", "--ema", "0.5", "--n-res", "4"]) == 0
    assert updates() == 1  # a grown net restarts its average
    assert main([*args, "--steps", "1", "--detail-sigma", "2.5"]) == 0  # the warp's detail in the paint
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.detail_sigma == 2.5 and extra["training"]["detail_sigma"] == [{"from_step": 24, "px": 2.5}]
    assert main([*args, "--steps", "1", "--detail-spare-mouth", "on"]) == 0  # not inside the target's mouth
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.detail_spare_mouth and extra["training"]["detail_spare_mouth"] == [{"from_step": 25, "on": 1.0}]
    assert main([*args, "--steps", "1"]) == 0  # kept when resumed without the option
    net = load_refine(run / "refine.safetensors")[0]
    assert net.spec.detail_sigma == 2.5 and net.spec.detail_spare_mouth
    assert main([*args, "--steps", "1", "--paint-mask", "--paint-keep", "150", "--paint-keep-overlap", "0.6",
                 "--paint-keep-stretch", "1.2"]) == 0
    net, extra = load_refine(run / "refine.safetensors")  # a seen open mouth left to the warp, where it overlaps
    assert net.spec.paint_keep == 150 and net.spec.paint_keep_overlap == 0.6 and net.spec.paint_keep_stretch == 1.2
    assert net.spec.paint_small == 4  # what was set before stays
    assert extra["training"]["paint_regions"][-1] == {"from_step": 27, "grow": [8, 4], "min": 0.25, "small": 4,
                                                      "area": [20.0, 100.0], "keep": 150.0, "keep_overlap": 0.6,
                                                      "keep_stretch": 1.2}
    # distilling a teacher (the same weights with the mirror average): its composite is a second target
    from dataclasses import replace

    teacher = tmp_path / "teacher.safetensors"
    mirrored = RefineNet(replace(net.spec, mirror_average=True))
    mirrored.load_state_dict(net.state_dict())
    save_refine(mirrored, teacher, extra=extra)
    assert main([*args, "--steps", "2", "--teacher", str(teacher), "--teacher-weight", "0.5"]) == 0
    _, extra = load_refine(run / "refine.safetensors")
    assert extra["training"]["teachers"] == [{"from_step": 28, "file": "teacher.safetensors", "steps": 28,
                                              "mirror_average": True}]
    assert extra["training"]["distil"] == [{"from_step": 28, "weight": 0.5}]
    assert "distil" in (run / "metrics.jsonl").read_text().splitlines()[-1]
    assert main([*args[:-3], "12", "16", "24", "--steps", "1"]) == 0  # wider layers, the same function at first
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.widths == (12, 16, 24) and extra["training"]["widths"] == [{"from_step": 30, "widths": [12, 16, 24]}]
    assert main([*args[:-3], "16", "8", "24", "--steps", "1"]) == 2  # they grow or shrink, not both at once
    wide = [*args[:-3], "12", "16", "24"]
    assert main([*wide, "--steps", "1", "--basis", "regional"]) == 0  # another warp under the same weights
    assert main([*wide, "--steps", "1"]) == 0  # kept on resume
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.basis == "au_basis_regional.npz"
    assert extra["training"]["bases"] == [{"from_step": 31, "basis": "regional"}]
    assert main([*args[:-3], "10", "16", "20", "--steps", "1"]) == 0  # narrower: the most used channels kept
    net, extra = load_refine(run / "refine.safetensors")
    assert net.spec.widths == (10, 16, 20) and extra["training"]["widths"][-1] == {"from_step": 33, "widths": [10, 16, 20]}
    # a teacher that reads other inputs (this one was shown a remembered mouth), or no checkpoint at all
    for bad in (teacher, tmp_path / "empty"):
        assert main([*args[:2], "--run", str(tmp_path / "z"), "--steps", "1", "--teacher", str(bad)]) == 2
        assert not (tmp_path / "z").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "train.refine_train", "--data", str(empty), "--run", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "aus.csv" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()
    for bad, option in ((["--basis-warp", "1.5"], "--basis-warp"), (["--lr-end", "-1"], "--lr-end"),
                        (["--adv", "-1"], "--adv"), (["--l2", "-1"], "--l2"), (["--psnr", "-1"], "--psnr"), (["--mirror", "2"], "--mirror"), (["--closing", "-0.5"], "--closing"), (["--carry", "1.5"], "--carry"), (["--paint-min", "0.2"], "--paint-min"),
                        (["--paint-mask", "--paint-min", "1.5"], "--paint-min"),
                        (["--paint-mask", "--paint-grow", "0", "4"], "--paint-grow"),
                        (["--paint-small", "4"], "--paint-small"), (["--paint-mask", "--paint-small", "-1"], "--paint-small"), (["--n-res", "-1"], "--n-res"),
                        (["--paint-keep", "150"], "--paint-keep"), (["--paint-mask", "--paint-keep", "-1"], "--paint-keep"),
                        (["--paint-mask", "--paint-keep-overlap", "1.5"], "--paint-keep-overlap"),
                        (["--paint-mask", "--paint-keep-stretch", "0.5"], "--paint-keep-stretch"),
                        (["--reference", "1.5"], "--reference"), (["--ema", "1"], "--ema"), (["--teacher-weight", "-1"], "--teacher-weight"), (["--detail-sigma", "-1"], "--detail-sigma"),
                        (["--widths", "0", "4", "4"], "--widths")):
        assert main([*args[:2], "--run", str(tmp_path / "y"), *bad]) == 2
        assert not (tmp_path / "y").exists(), option


def test_adversarial_options_train_record_and_resume(clip_frames, tmp_path, capsys):
    """Issue 32: R1, DiffAugment, critic feature matching and a lower L1 anchor run a few steps, are
    recorded in the training totals from the step they start, and resume with the critic."""
    from train.refine_adv import load_critic
    from train.refine_train import main

    run = tmp_path / "run"
    args = ["--data", str(clip_frames), "--run", str(run), "--batch", "2", "--held-out", "0", "--workers", "0",
            "--widths", "8", "16", "16", "--limit", "40"]
    assert main([*args, "--steps", "1"]) == 0
    _, extra = load_refine(run / "refine.safetensors")
    assert not {"r1", "diffaug", "feat_match", "l1_weight"} & set(extra["training"])  # defaults record nothing
    gan = ["--adv", "0.05", "--r1", "1", "--diffaug", "--feat-match", "1", "--l1-weight", "0.5"]
    assert main([*args, "--steps", "2", *gan]) == 0
    assert load_critic(run / "critic.safetensors", 1e-4)[2] == 2
    _, extra = load_refine(run / "refine.safetensors")
    t = extra["training"]
    assert t["steps"] == 3 and t["adv_from_step"] == 1
    assert t["r1"] == [{"from_step": 1, "gamma": 1.0}] and t["feat_match"] == [{"from_step": 1, "weight": 1.0}]
    assert t["diffaug"] == [{"from_step": 1, "policy": "color,translation,cutout"}]
    assert t["l1_weight"] == [{"from_step": 1, "weight": 0.5}]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"adv_r1", "feat", "adv_g", "adv_d"} <= set(last) and all(np.isfinite(last[k]) for k in ("adv_r1", "feat"))
    assert main([*args, "--steps", "2", *gan]) == 0  # resumes: the same settings are not recorded again
    assert load_critic(run / "critic.safetensors", 1e-4)[2] == 4
    _, extra = load_refine(run / "refine.safetensors")
    assert extra["training"]["r1"] == [{"from_step": 1, "gamma": 1.0}] and extra["training"]["steps"] == 5
    assert main([*args, "--steps", "1", "--adv", "0.05", "--diffaug", "translation"]) == 0  # changed, recorded
    _, extra = load_refine(run / "refine.safetensors")
    t = extra["training"]
    assert t["diffaug"][-1] == {"from_step": 5, "policy": "translation"}
    assert t["r1"][-1] == {"from_step": 5, "gamma": 0.0} and t["feat_match"][-1] == {"from_step": 5, "weight": 0.0}
    assert t["l1_weight"][-1] == {"from_step": 5, "weight": 1.0}
    capsys.readouterr()
    for bad, option in ((["--l1-weight", "-0.5"], "--l1-weight"), (["--adv", "0.05", "--r1", "-1"], "--r1"),
                        (["--adv", "0.05", "--feat-match", "-1"], "--feat-match"),
                        (["--adv", "0.05", "--diffaug", "colour"], "--diffaug"), (["--r1", "1"], "--r1"),
                        (["--diffaug"], "--diffaug"), (["--feat-match", "1"], "--feat-match")):
        assert main([*args[:2], "--run", str(tmp_path / "y"), *bad]) == 2, option
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and option in err, err
        assert not (tmp_path / "y").exists(), option


def test_diffaug_translation_moves_image_and_maps_together():
    from train.refine_adv import aug_translation, critic_view, diff_augment, patch_weight

    n, s = 6, 64
    image = torch.full((n, 3, s, s), -1.0)
    geometry = torch.zeros(n, 4, s, s)
    weight = torch.ones(n, 1, s, s)
    for i in range(n):  # a marked pixel, and a mouth-sized patch, at another place in each crop
        y, x = 20 + i, 30 - i
        image[i, :, y, x] = 1.0
        geometry[i, :2, y, x] = 1.0
        weight[i, :, y - 4:y + 4, x - 4:x + 4] = 5.0
    gen = torch.Generator().manual_seed(3)
    moved, (geo, w) = aug_translation(image, [geometry[:, :2], weight], generator=gen)
    assert moved.shape == image.shape and geo.shape == (n, 2, s, s) and w.shape == weight.shape
    shifts = set()
    for i in range(n):
        ys, xs = torch.nonzero(moved[i, 0] > 0.5, as_tuple=True)
        assert len(ys) == 1  # the mark moved whole (the shift is at most S/8, so it stays inside)
        assert torch.equal(torch.nonzero(geo[i, 0] > 0.5), torch.nonzero(moved[i, 0] > 0.5))
        assert torch.equal(geo[i, 0], geo[i, 1])
        assert w[i, 0, ys[0], xs[0]] == 5.0 and int((w[i] > 1.5).sum()) == 64  # the focus moved with it
        shifts.add((int(ys[0]) - 20 - i, int(xs[0]) - 30 + i))
    assert len(shifts) > 1 and all(abs(dy) <= s // 8 and abs(dx) <= s // 8 for dy, dx in shifts)
    # the whole policy, through critic_view: the patch weights are pooled from the moved weight
    torch.manual_seed(0)
    before = torch.randn(4)
    img, geo2, pw = critic_view(image, geometry, weight,
                                lambda x, maps: diff_augment(x, maps, "translation", torch.Generator().manual_seed(3)))
    assert torch.equal(geo2, geo) and torch.equal(pw, patch_weight(w))
    assert torch.equal(img, moved)
    torch.manual_seed(0)
    assert torch.equal(torch.randn(4), before)  # its own generator: the global draws are untouched
    # colour and cutout change the image only, differentiably
    x = image.clone().requires_grad_(True)
    out, (g3,) = diff_augment(x, [geometry], "color,cutout", torch.Generator().manual_seed(1))
    assert torch.equal(g3, geometry)
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_r1_penalty_is_positive_for_a_live_critic_and_zero_at_gamma_0():
    from train.refine_adv import PatchCritic, critic_loss, critic_step_loss, patch_weight, r1_penalty

    torch.manual_seed(0)
    critic = PatchCritic()
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    geometry = torch.rand(2, 4, 32, 32)
    weight = torch.ones(2, 1, 32, 32)
    weight[:, :, 8:24, 8:24] = 5.0
    pw = patch_weight(weight)
    r1, scores = r1_penalty(critic, real, geometry, pw, 1.0)
    assert scores.shape == (2, 1, 4, 4) and float(r1.detach()) > 0
    r1.backward()  # differentiable in the critic's weights
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in critic.parameters())
    assert float(r1_penalty(critic, real, geometry, pw, 0.0)[0].detach()) == 0.0
    assert float(r1_penalty(critic, real, geometry, torch.zeros_like(pw), 1.0)[0].detach()) == 0.0  # no patch counts
    hinge, none = critic_step_loss(critic, (real, geometry, pw), (real.flip(-1), geometry, pw), 0.0)
    assert none is None
    critic.eval()  # (no power iteration: the same weights for both calls)
    hinge, _ = critic_step_loss(critic, (real, geometry, pw), (real.flip(-1), geometry, pw), 0.0)
    assert torch.equal(hinge, critic_loss(critic, real, real.flip(-1), geometry, pw))


def test_critic_features_and_feature_matching():
    from train.refine_adv import PatchCritic, feature_matching

    torch.manual_seed(0)
    critic = PatchCritic().eval()
    image, geometry = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 4, 32, 32)
    feats = critic.features(image, geometry)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4]
    assert torch.equal(critic.net[-1](feats[-1]), critic(image, geometry))  # forward unchanged
    weight = torch.ones(2, 1, 32, 32)
    weight[:, :, 8:24, 8:24] = 5.0
    fake = image.clone().requires_grad_(True)
    assert float(feature_matching(critic, image, fake, geometry, weight).detach()) == 0.0
    moved = (image + 0.3 * torch.randn_like(image)).requires_grad_(True)
    fm = feature_matching(critic, image, moved, geometry, weight)
    assert float(fm.detach()) > 0
    fm.backward()
    assert float(moved.grad.abs().sum()) > 0


@pytest.mark.parametrize("flow", [False, True])
def test_refine_generator_keeps_the_background(shared_data, tmp_path, flow):
    from rtanim.face.compose import region_box
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import load_rgb
    from rtanim.pipeline.generators import load_generator
    from rtanim.pipeline.jobs import FaceJob

    torch.manual_seed(0)
    net = RefineNet(RefineSpec(flow=flow))
    for p in net.head.parameters():
        p.data.normal_(0, 0.05)
    weights = save_refine(net, tmp_path / "r.safetensors")
    gen = load_generator(str(weights), "onnxruntime")
    assert gen.name == "refine"
    img = load_rgb(shared_data / "stills" / "single_face.jpg")
    with FaceTracker(1, mode="image") as tr:
        face = tr.track(img)[0]
    from rtanim.face.align import crop
    from rtanim.face.compose import compose

    job = FaceJob(face, crop(img, face.transform), {"AU25": 1.0, "AU26": 0.8})
    out = gen.generate([job])
    assert out[0].flow is not None and out[0].attention.shape == (1, 128, 128)
    warp_flow = gen.inputs(job)[3]
    # with a flow head the residual flow is composed into the warp's, else the warp's flow is kept
    assert np.array_equal(out[0].flow, warp_flow) != flow
    result = compose(img, out, [face.transform])
    x0, y0, x1, y1 = region_box(face.transform.matrix, 128, img.shape)
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(result[outside], img[outside])
    assert np.abs(result.astype(int) - img)[~outside].mean() > 0.1


def test_self_reenactment_rows(shared_data, tmp_path):
    from rtanim.measure.reenact import ReenactOptions, clip_paths, evaluate_reenact

    clip = shared_data / "video" / "single_face.mp4"
    r = evaluate_reenact("warp", clip, tmp_path / "rep", ReenactOptions(pairs_per_clip=2, max_frames=40))
    assert list(r.rows) == ["copy", "warp"] and r.pairs >= 1
    for row in r.rows.values():
        assert 5 < row["mouth_psnr"] < 99 and 0 < row["mouth_ssim"] <= 1
    assert (tmp_path / "rep" / "reenact.md").read_text().startswith("# Self-reenactment")
    def no_nan(constant: str) -> None:
        raise AssertionError(f"{constant} in reenact.json (not JSON)")

    saved = json.loads((tmp_path / "rep" / "reenact.json").read_text(), parse_constant=no_nan)
    pairs = saved["per_pair"]
    assert list(pairs) == ["copy", "warp"] and len(pairs["copy"]) == len(pairs["warp"]) == r.pairs
    assert [(p["source"], p["target"]) for p in pairs["copy"]] == [(p["source"], p["target"]) for p in pairs["warp"]]
    assert np.mean([p["mouth_psnr"] for p in pairs["warp"]]) == pytest.approx(r.rows["warp"]["mouth_psnr"], abs=1e-3)
    with pytest.raises(InputError):
        clip_paths(tmp_path / "nothing.txt")


def test_tensorrt_fp16_build_of_the_refine_graph(tmp_path):
    """The refine ONNX graph through the existing TensorRT FP16 builder, run against PyTorch FP32
    (GPU machines: calib/device_check.sh runs this file)."""
    from engines.trt_engine import trt_available

    why = trt_available()
    if why is not None or not torch.cuda.is_available():
        pytest.skip(why or "needs a CUDA device")
    import tensorrt as trt

    from engines.refine_engine import INPUTS, export_refine_onnx
    from engines.trt_engine import build_serialized

    torch.manual_seed(2)
    net = RefineNet(RefineSpec(flow=True)).eval()  # what ships: with the residual flow head
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    onnx_path = export_refine_onnx(net, tmp_path / "refine.onnx")
    blob = build_serialized(onnx_path, precision="fp16", max_batch=8)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(blob)
    ctx = engine.create_execution_context()
    n, k = 3, len(net.spec.au_codes)
    inputs = {"image": torch.rand(n, 3, 128, 128) * 2 - 1, "aus": torch.rand(n, k), "geometry": torch.rand(n, 4, 128, 128)}
    dev = {name: t.cuda().contiguous() for name, t in inputs.items()}
    outs = {"attention": torch.empty(n, 1, 128, 128, device="cuda"), "color": torch.empty(n, 3, 128, 128, device="cuda"),
            "flow": torch.empty(n, 2, 128, 128, device="cuda")}
    for name in INPUTS:
        ctx.set_input_shape(name, tuple(dev[name].shape))
        ctx.set_tensor_address(name, dev[name].data_ptr())
    for name in net.spec.outputs:
        ctx.set_tensor_address(name, outs[name].data_ptr())
    stream = torch.cuda.Stream()
    assert ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    with torch.no_grad():
        ref = net(inputs["image"], inputs["aus"], inputs["geometry"])
    for got, want in zip((outs[n] for n in net.spec.outputs), ref, strict=True):
        assert (got.cpu() - want).abs().max() < 2e-2


def test_trained_refine_weights_in_fp16_on_cuda_match_fp32():
    """The trained weights as they would ship (paint region, the warp's detail, the mirror average),
    run in FP16 on a CUDA device against FP32 on the CPU: whether the graph's numbers survive half
    precision, as a TensorRT FP16 engine would compute them (GPU machines: calib/device_check.sh)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none visible to torch)")
    from dataclasses import replace

    trained, _ = load_refine(Path(__file__).resolve().parents[1] / "train" / "init" / "refine.safetensors")
    net = RefineNet(replace(trained.spec, mirror_average=True, paint_keep=150.0, paint_keep_stretch=1.0)).eval()
    net.load_state_dict(trained.state_dict())
    g = torch.Generator().manual_seed(3)
    n, k = 8, len(net.spec.au_codes)
    image = torch.rand(n, 3, 128, 128, generator=g) * 2 - 1
    aus = torch.rand(n, k, generator=g)
    geometry = (torch.rand(n, net.spec.n_geometry + 1, 128, 128, generator=g) > 0.7).float()  # + the own mouth
    with torch.no_grad():
        want = net(image, aus, geometry)
        half = net.to("cuda", torch.float16)
        got = half(image.cuda().half(), aus.cuda().half(), geometry.cuda().half())
    for name, a, b in zip(net.spec.outputs, got, want, strict=True):
        assert torch.isfinite(a).all(), name
        assert (a.float().cpu() - b).abs().max() < 2e-2, name


def test_held_out_people_do_not_change_when_stills_are_added(mean_face):
    """Stills train always, and adding them must not move the self-reenactment test's people."""
    from train.refine_data import Frames, split_people

    def frames(n_stills: int) -> Frames:
        clips = [f"talk/M{p:03d}_take{k}.mp4" for p in range(8) for k in range(2)] + [f"utk/{i}.jpg" for i in range(n_stills)]
        clip = np.array([c for c in range(16) for _ in range(5)] + list(range(16, 16 + n_stills)))
        n = len(clip)
        f = Frames([f"x{i}" for i in range(n)], clip, clips, np.where(clip < 16, np.arange(n), -1),
                   np.zeros((n, 30), np.float32), np.repeat(mean_face[None, :, :2], n, 0).astype(np.float32),
                   np.zeros((n, 128, 128, 3), np.uint8))
        f.mouth_px[:] = np.where(np.arange(n) % 3 == 0, 500.0, 50.0)  # every third frame open
        return f

    plain, mixed = frames(0), frames(12)
    held_plain, held_mixed = split_people(plain, 0.25, seed=0), split_people(mixed, 0.25, seed=0)
    assert 0 < held_plain.sum() < len(plain)
    assert np.array_equal(held_mixed[: len(plain)], held_plain)
    assert not held_mixed[len(plain):].any()
    people = {plain.persons[i] for i in np.flatnonzero(held_plain)}
    assert all(plain.persons[i] in people for i in range(len(plain)) if held_plain[i])
    assert not any(plain.persons[i] in people for i in range(len(plain)) if not held_plain[i])  # whole people


def test_recolour_changes_input_and_target_alike():
    from train.refine_data import Pair, PairMix, recolour

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    pair = Pair(img.copy(), np.zeros((4, 128, 128), np.float32), np.zeros(30, np.float32), img.copy(),
                np.ones((128, 128), np.float32), "identity")
    grey = recolour(pair, rng, PairMix(grey=1.0, jitter=0.0))
    assert np.array_equal(grey.warped, grey.target)
    assert np.array_equal(grey.target[..., 0], grey.target[..., 2]) and not np.array_equal(img[..., 0], img[..., 2])
    jit = recolour(pair, rng, PairMix(grey=0.0, jitter=1.0))
    assert np.array_equal(jit.warped, jit.target) and not np.array_equal(jit.target, img)
    assert recolour(pair, rng, PairMix(grey=0.0, jitter=0.0)) is pair


def test_respec_script_changes_the_spec_not_the_weights(tmp_path):
    """calib/respec_refine.py: the same weights with the mirror average / another paint region,
    recorded in the totals; bad requests are one line and exit 2, and write nothing."""
    sys.path.insert(0, str(ROOT / "calib"))
    from respec_refine import main as respec

    torch.manual_seed(6)
    net = RefineNet(RefineSpec(widths=(8, 16, 16), paint_mask=True, paint_min=0.25))
    src = save_refine(net, tmp_path / "src.safetensors", extra={"training": {"steps": 11}})
    dst = tmp_path / "dst.safetensors"
    assert respec([str(src), str(dst), "--mirror-average", "on", "--paint-small", "4"]) == 0
    got, extra = load_refine(dst)
    assert got.spec.mirror_average and got.spec.paint_small == 4 and got.spec.paint_min == 0.25
    assert extra["training"]["respec"] == [{"at_step": 11, "mirror_average": True, "paint_small": 4}]
    want = load_refine(src)[0].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in got.state_dict().items())
    plain = save_refine(RefineNet(RefineSpec(widths=(8, 16, 16))), tmp_path / "plain.safetensors")
    for bad in ([str(src), str(src), "--mirror-average", "on"], [str(plain), str(tmp_path / "x.safetensors"),
                                                                  "--paint-small", "4"],
                [str(src), str(tmp_path / "y.safetensors"), "--paint-min", "1.5"]):
        assert respec(bad) == 2
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


def test_carry_pairs_keep_the_open_mouth_they_reshape(clip_frames):
    """PairMix.carry: an open mouth is reshaped and warped back with its interior, not filled; the
    source maps say where that interior is, so the paint region covers only what the warp changed."""
    from rtanim.face.landmarks import INNER_MOUTH, polygon_mask
    from train.refine_data import PairMaker, PairMix, load_frames

    frames = load_frames([clip_frames])
    i = int(np.argmax(frames.mouth_px))
    frames.mouth_px[i] = 1000.0  # open, whatever the clip shows: the pair is drawn for an open mouth
    inside = polygon_mask(frames.landmarks[i], [INNER_MOUTH]) > 0.5
    assert inside.sum() > 20

    def pairs(carry: float) -> list:
        maker = PairMaker(frames, mix=PairMix(carry=carry), seed=3)
        return [maker.cycle_pair(i) for _ in range(24)]

    carried = [p for p in pairs(1.0) if p.kind == "carry"]
    assert carried and all(p.kind == "cycle" for p in pairs(0.0))
    filled = pairs(0.0)[0]
    assert filled.geometry[2].sum() == 0  # a filled mouth: no interior claimed
    for p in carried:
        assert p.geometry[2].sum() > 0 and np.array_equal(p.target, frames.images[i])
        # the real interior comes through (nearer the target than the fill is)
        err = np.abs(p.warped.astype(int) - p.target)[inside].mean()
        assert err < np.abs(filled.warped.astype(int) - filled.target)[inside].mean()


def test_regional_basis_keeps_each_aus_motion_in_its_part_of_the_face():
    """rtanim/assets' regional basis is calib/regional_basis.py's output: a jaw drop leaves the nose,
    eyes and brows where they are, a blink leaves the lips, and the motion it keeps is the shipped
    basis's (AU26 scaled by its gain)."""
    sys.path.insert(0, str(ROOT / "calib"))
    from regional_basis import GAINS, regional

    from rtanim.models.refine import BASES, REGIONAL_BASIS, load_basis

    shipped, asset = AUBasis.load(), load_basis(REGIONAL_BASIS)
    assert np.allclose(asset.basis, regional(shipped).basis, atol=1e-5)  # the asset is the script's
    k = {c: shipped.codes.index(c) for c in ("AU26", "AU45L", "AU12L", "AU01")}
    still = [4, 6, 168, 105, 159, 10]  # nose tip, nose bridge, between the eyes, a brow, a lid, the forehead
    assert np.abs(shipped.basis[k["AU26"], still]).max() > 1.0  # what the shipped fit carries along
    assert np.abs(asset.basis[k["AU26"], still]).max() == 0.0
    lips, chin = [13, 14, 61, 291, 0, 17], [152]
    assert np.abs(shipped.basis[k["AU45L"], lips]).max() > 0.5 and np.abs(asset.basis[k["AU45L"], lips]).max() == 0
    assert np.allclose(asset.basis[k["AU26"], lips + chin], GAINS["AU26"] * shipped.basis[k["AU26"], lips + chin])
    assert np.allclose(asset.basis[k["AU12L"], [61, 291]], shipped.basis[k["AU12L"], [61, 291]])  # smile corners
    assert np.allclose(asset.basis[k["AU01"], [105, 334]], shipped.basis[k["AU01"], [105, 334]])  # brows
    assert asset.meta["regional"]["gains"] == GAINS and BASES["regional"] == REGIONAL_BASIS
    with pytest.raises(ValueError, match="unknown AU basis"):
        load_basis("nope.npz")


def test_refine_net_warps_with_the_basis_its_spec_names(tmp_path, mean_face):
    """RefineSpec.basis travels in the checkpoint, and the run time's warp is that basis's: on a jaw
    drop the regional one leaves the nose bridge where it was; respec_refine.py --basis sets it."""
    sys.path.insert(0, str(ROOT / "calib"))
    from respec_refine import main as respec

    from rtanim.models.refine import REGIONAL_BASIS
    from rtanim.pipeline.generators import RefineGenerator

    src = save_refine(RefineNet(RefineSpec(widths=(8, 16, 16))), tmp_path / "shipped.safetensors")
    dst = tmp_path / "regional.safetensors"
    assert respec([str(src), str(dst), "--basis", "regional"]) == 0
    assert load_refine(dst)[0].spec.basis == REGIONAL_BASIS and load_refine(src)[0].spec.basis == ""
    assert RefineSpec.from_json(RefineSpec(basis=REGIONAL_BASIS).to_json()).basis == REGIONAL_BASIS
    live, target = {"AU26": 0.0}, {"AU26": 1.0}
    y, x = np.round(mean_face[168, ::-1]).astype(int)  # between the eyes
    moved = {}
    for name, path in (("shipped", src), ("regional", dst)):
        flow = RefineGenerator(path, "torch").warp.flow(mean_face, live, target)
        moved[name] = float(np.abs(flow[:, y, x]).max() * 64)  # px of a 128 px crop
    assert moved["shipped"] > 0.5 and moved["regional"] < 0.1, moved
    # a checkpoint that names a basis this build lacks is one clear error, not a traceback later
    import safetensors.torch
    from safetensors import safe_open

    tensors = safetensors.torch.load_file(str(src))
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    meta["spec"] = RefineSpec(widths=(8, 16, 16), basis="au_basis_future.npz").to_json()
    odd = tmp_path / "future.safetensors"
    safetensors.torch.save_file(tensors, str(odd), metadata=meta)
    with pytest.raises(InputError, match="AU basis this build lacks"):
        load_refine(odd)
