"""compose: exact pass-through, changes confined to the face region, numpy == torch, flow geometry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rtanim.face.align import CropTransform
from rtanim.face.compose import FaceOutput, compose, compose_torch, feather_mask, grid_factor, unbatch

S = 128


def similarity(centre: tuple[float, float], face_px: float, angle: float = 0.0) -> CropTransform:
    """Frame -> crop transform putting a face of ``face_px`` frame pixels at the crop centre."""
    s = S / face_px
    m = np.array([[s * np.cos(angle), s * np.sin(angle), 0.0], [-s * np.sin(angle), s * np.cos(angle), 0.0]])
    m[:, 2] = (S - 1) / 2.0 - m[:, :2] @ np.asarray(centre, np.float64)
    return CropTransform(m)


def smooth_outputs(seed: int, flow_scale: float = 0.05) -> FaceOutput:
    """Generator-like outputs: smooth attention, smooth colour, smooth flow of a few pixels."""
    rng = np.random.default_rng(seed)
    att = cv2.GaussianBlur(rng.random((S, S)).astype(np.float32), (0, 0), 4)
    att = (att - att.min()) / (att.max() - att.min())
    col = cv2.GaussianBlur(rng.uniform(-1, 1, (S, S, 3)).astype(np.float32), (0, 0), 2) * 3
    yy, xx = np.mgrid[0:S, 0:S]
    ph = rng.uniform(0, 6, 2)
    flow = np.stack([np.sin(xx / 19.0 + ph[0]), np.cos(yy / 17.0 + ph[1])]) * flow_scale
    return FaceOutput(att[None], np.clip(col, -1, 1).transpose(2, 0, 1), flow.astype(np.float32))


@pytest.fixture(scope="module")
def photo(shared_data) -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(shared_data / "stills" / "astronaut.png")), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(np.pad(img, ((0, 0), (64, 64), (0, 0)), mode="reflect"))  # 512 x 640


def test_attention_one_without_flow_is_bitwise_identity(photo):
    t = similarity((300, 220), 230, 0.3)
    out = FaceOutput(np.ones((1, S, S), np.float32), smooth_outputs(0).color)
    before = photo.copy()
    result = compose(photo, [out], [t])
    assert result is not photo
    assert np.array_equal(result, photo)
    assert np.array_equal(photo, before)  # input untouched


def test_changes_stay_inside_the_face_region(photo):
    t = similarity((300, 220), 200, -0.4)
    out = smooth_outputs(1)
    before = photo.copy()
    result = compose(photo, [out], [t])
    assert np.array_equal(photo, before)
    # The region: where the feather mask, warped back, is non-zero (grown by 1 px for bilinear reach).
    support = cv2.warpAffine(feather_mask(S), t.inverse, photo.shape[1::-1], flags=cv2.INTER_LINEAR) > 0
    support = cv2.dilate(support.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    changed = (result != photo).any(-1)
    assert changed.sum() > 10_000  # it did something
    assert not changed[~support].any()


def test_numpy_and_torch_agree_within_one_grey_level(photo):
    faces = [
        (similarity((300, 220), 230, 0.3), smooth_outputs(2)),
        (similarity((120, 400), 90, -0.2), smooth_outputs(3)),
    ]
    ts, outs = [f[0] for f in faces], [f[1] for f in faces]
    ref = compose(photo, outs, ts)
    got = compose_torch(
        torch.from_numpy(photo),
        torch.from_numpy(np.stack([o.attention for o in outs])),
        torch.from_numpy(np.stack([o.color for o in outs])),
        torch.from_numpy(np.stack([o.flow for o in outs])),
        ts,
    ).numpy()
    diff = np.abs(ref.astype(np.int16) - got)
    assert diff.max() <= 1, f"max diff {diff.max()} at {np.argwhere(diff > 1)[:5].tolist()}"
    assert (ref != photo).any()


def test_two_faces_compose_independently(photo):
    ta, tb = similarity((200, 200), 150), similarity((480, 330), 150, 0.2)
    oa, ob = smooth_outputs(4), smooth_outputs(5)
    both = compose(photo, [oa, ob], [ta, tb])
    only_a, only_b = compose(photo, [oa], [ta]), compose(photo, [ob], [tb])
    in_a, in_b = (only_a != photo).any(-1), (only_b != photo).any(-1)
    assert in_a.any() and in_b.any() and not (in_a & in_b).any()
    assert np.array_equal(both[in_a], only_a[in_a])
    assert np.array_equal(both[in_b], only_b[in_b])
    assert np.array_equal(both[~(in_a | in_b)], photo[~(in_a | in_b)])


def test_flow_is_converted_to_frame_pixels(photo):
    """A uniform crop flow of 2 crop px at 0.5 crop px per frame px samples 4 frame px away."""
    t = similarity((300, 250), 256)  # scale 0.5, no rotation
    flow = np.zeros((2, S, S), np.float32)
    flow[0] = 2.0 / (S / 2)  # +2 crop px in x
    out = FaceOutput(np.ones((1, S, S), np.float32), np.zeros((3, S, S), np.float32), flow)
    result = compose(photo, [out], [t])
    inner = (slice(200, 300), slice(250, 350))  # deep inside the mask: full flow, no feathering
    shifted = (inner[0], slice(254, 354))
    assert np.array_equal(result[inner], photo[shifted])


def test_uint8_colour_and_engine_batches():
    frame = np.full((100, 120, 3), 10, np.uint8)
    t = similarity((60, 50), 60)
    batch = type("Outputs", (), {})()
    batch.attention = torch.zeros(1, 1, S, S)
    batch.color = torch.full((1, 3, S, S), 1.0)  # white in [-1, 1]
    batch.flow = None
    (face,) = unbatch(batch)
    white = compose(frame, [face], [t])
    white_u8 = compose(frame, [FaceOutput(np.zeros((1, S, S)), np.full((3, S, S), 255, np.uint8))], [t])
    assert white[50, 60].tolist() == [255, 255, 255]
    assert np.array_equal(white, white_u8)
    with pytest.raises(ValueError):
        compose(frame, [face], [])


def test_region_edge_is_feathered():
    """Repainting everything (A = 0) fades in over several frame pixels at the crop edge, no seam."""
    frame = np.zeros((300, 300, 3), np.uint8)
    t = similarity((150, 150), 128)  # 1 crop px per frame px
    out = FaceOutput(np.zeros((1, S, S), np.float32), np.ones((3, S, S), np.float32))
    row = compose(frame, [out], [t])[150, :, 0].astype(int)
    assert row[150] == 255 and row[0] == 0
    assert np.abs(np.diff(row)).max() < 80  # a hard paste would jump 255 in one pixel


# --------------------------------------------- the reduced grid (A, C, F at about crop resolution)


def grown_support(t: CropTransform, shape: tuple[int, ...], grow: int) -> np.ndarray:
    """Frame pixels where the warped-back feather mask is non-zero, grown by ``grow`` px."""
    support = cv2.warpAffine(feather_mask(S), t.inverse, shape[1::-1], flags=cv2.INTER_LINEAR) > 0
    return cv2.dilate(support.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)).astype(bool)


def grid_vs_native(frame: np.ndarray, out: FaceOutput, t: CropTransform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Default compose, the every-pixel reference (step=0), and their per-pixel abs difference."""
    fast, native = compose(frame, [out], [t]), compose(frame, [out], [t], step=0)
    return fast, native, np.abs(fast.astype(np.int16) - native).max(-1)


def test_large_face_resamples_on_a_coarser_grid_within_a_grey_level(photo):
    t = similarity((320, 250), 480, 0.3)  # 3.75 frame px per crop px: one sample per 3x3 px
    assert grid_factor(t.matrix) == 3 and grid_factor(t.matrix, step=0) == 1
    out = smooth_outputs(6)
    fast, native, diff = grid_vs_native(photo, out, t)
    region = (fast != photo).any(-1) | (native != photo).any(-1)
    assert region.sum() > 50_000
    assert diff[region].mean() < 1.0 and np.percentile(diff[region], 99.9) <= 6, diff.max()
    # The changed area grows by less than one crop pixel (3 frame px here); outside it, the input.
    assert np.array_equal(fast[~grown_support(t, photo.shape, 3)], photo[~grown_support(t, photo.shape, 3)])
    # The every-pixel reference is what compose_torch computes.
    got = compose_torch(
        torch.from_numpy(photo), *(torch.from_numpy(x[None]) for x in (out.attention, out.color, out.flow)), [t]
    ).numpy()
    assert np.abs(native.astype(np.int16) - got).max() <= 1


@pytest.mark.parametrize("face_px", [384, 512])  # grid factors 3 and 4
def test_coarse_grid_keeps_the_identity_exact(photo, face_px):
    """A = 1 with zero flow leaves every pixel as it was, whatever the grid (no drift from upsampling)."""
    t = similarity((320, 260), face_px, -0.2)
    assert grid_factor(t.matrix) == face_px // S
    keep = FaceOutput(np.ones((1, S, S), np.float32), smooth_outputs(0).color, np.zeros((2, S, S), np.float32))
    assert np.array_equal(compose(photo, [keep], [t]), photo)


def test_scratch_buffers_do_not_leak_between_faces_or_calls(photo):
    big, small = (similarity((320, 250), 480), smooth_outputs(7)), (similarity((150, 150), 140, 0.5), smooth_outputs(8))
    first = compose(photo, [big[1]], [big[0]])
    compose(photo, [small[1], big[1]], [small[0], big[0]])
    compose(photo, [small[1]], [small[0]])
    assert np.array_equal(compose(photo, [big[1]], [big[0]]), first)


def test_coarse_grid_on_a_real_face_with_real_flow_and_a_hard_edged_repaint(shared_data):
    """A native 680 px photo (face ~480 px, grid factor 3), the ``warp`` model's flow for a smile
    with the jaw dropped, and a mouth repainted with a one-crop-pixel hard edge (the worst case
    for resampling): within a grey level on average, a few at the hard edge."""
    from rtanim.commands.image import track_still
    from rtanim.expression.aus import preset_aus
    from rtanim.models.geometry import WarpModel

    img = cv2.cvtColor(cv2.imread(str(shared_data / "stills" / "tpsmm_source.png")), cv2.COLOR_BGR2RGB)
    (face,) = track_still(img, 1)
    t = face.transform
    assert grid_factor(t.matrix) >= 3
    model = WarpModel()
    lm = t.to_crop(face.landmarks)
    flow = model.flow(lm, face.aus, {**preset_aus("smile"), "AU25": 0.8, "AU26": 0.6})
    mouth = lm[[61, 291, 13, 14], :2].mean(0)  # mouth corners and inner lips, crop px
    att = np.ones((S, S), np.float32)
    cv2.ellipse(att, tuple(int(round(v)) for v in mouth), (16, 7), 0, 0, 360, 0.0, -1)
    col = np.full((3, S, S), -0.7, np.float32)
    out = FaceOutput(att[None], col, flow.astype(np.float32))
    fast, native, diff = grid_vs_native(img, out, t)
    region = (fast != img).any(-1) | (native != img).any(-1)
    assert region.sum() > 20_000
    assert diff[region].mean() < 1.0, diff[region].mean()
    assert (diff[region] > 8).mean() < 0.01, ((diff[region] > 8).mean(), diff.max())
    k = grid_factor(t.matrix)
    assert np.array_equal(fast[~grown_support(t, img.shape, k)], img[~grown_support(t, img.shape, k)])


def crop_of(frame: np.ndarray, t: CropTransform) -> np.ndarray:
    """The frame's crop ([3,S,S] in [-1,1]): what a refine model paints over."""
    c = cv2.warpAffine(frame, t.matrix, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return c.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def test_colour_base_keeps_the_frames_detail_where_the_colour_only_adjusts_it(photo):
    """With ``color_base``, a colour that shifts its base by a few grey levels (a recoloured lip)
    moves the frame's own full-resolution pixels by that much, texture kept; replacing the pixels
    by C (no base) loses the texture. A colour far from its base (a dark mouth painted over lips)
    replaces the pixels either way: the detail of what was there would be wrong."""
    t = similarity((300, 220), 256)  # 2 frame px per crop px
    base = crop_of(photo, t)
    paint = np.zeros((1, S, S), np.float32)  # A = 0: the colour everywhere in the region
    inner = cv2.warpAffine((feather_mask(S) >= 1).astype(np.uint8), t.inverse, photo.shape[1::-1],
                           flags=cv2.INTER_NEAREST).astype(bool)
    inner &= (photo.astype(np.int16) + 4 < 250).all(-1)  # where the shift does not saturate

    def lap(x: np.ndarray) -> np.ndarray:
        return np.abs(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F))

    shifted = np.clip(base + np.float32(4 / 127.5), -1, 1)
    with_base = compose(photo, [FaceOutput(paint, shifted, color_base=base)], [t])
    plain = compose(photo, [FaceOutput(paint, shifted)], [t])
    assert lap(with_base)[inner].mean() > 1.5 * lap(plain)[inner].mean()  # texture kept, not blurred
    assert abs(float(np.median(with_base[inner].astype(np.int16) - photo[inner])) - 4) <= 1
    dark = np.full_like(base, -0.8)  # 25 grey levels: nothing of the frame's texture belongs in it
    painted = compose(photo, [FaceOutput(paint, dark, color_base=base)], [t])
    far_crop = (np.abs((base + 1) * 127.5 - 25).min(0) > 100).astype(np.uint8)  # base far from the paint
    far_crop = cv2.erode(far_crop, np.ones((5, 5), np.uint8))  # clear of where it comes near
    far = inner & cv2.warpAffine(far_crop, t.inverse, photo.shape[1::-1], flags=cv2.INTER_NEAREST).astype(bool)
    far = cv2.erode(far.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # off the feathered edge
    assert far.sum() > 1000 and np.abs(painted[far].astype(np.int16) - 25).max() <= 2


def test_colour_base_is_the_same_composite_at_crop_resolution(photo):
    """Where crop pixels are frame pixels, painting C over a base that is the frame's own crop
    is replacing the pixels by C: the base only adds detail the crop does not hold."""
    t = similarity((300.5, 220.5), S)  # crop pixel centres on frame pixel centres
    o = smooth_outputs(6, flow_scale=0.0)
    base = crop_of(photo, t)
    plain = compose(photo, [FaceOutput(o.attention, o.color)], [t])
    with_base = compose(photo, [FaceOutput(o.attention, o.color, color_base=base)], [t])
    diff = np.abs(plain.astype(np.int16) - with_base)
    assert diff.max() <= 1 and (plain != photo).any()


def test_colour_base_numpy_and_torch_agree(photo):
    t = similarity((300, 220), 230, 0.3)
    o = smooth_outputs(7)
    base = crop_of(photo, t)
    ref = compose(photo, [FaceOutput(o.attention, o.color, o.flow, color_base=base)], [t], step=0)
    got = compose_torch(torch.from_numpy(photo), torch.from_numpy(o.attention[None]), torch.from_numpy(o.color[None]),
                        torch.from_numpy(o.flow[None]), [t], color_base=torch.from_numpy(base[None])).numpy()
    diff = np.abs(ref.astype(np.int16) - got)
    assert diff.max() <= 1 and (ref != photo).any()


@pytest.mark.parametrize("face_px,angle", [(140, 0.4), (480, 0.3)])  # native and 3x3-pixel grids
def test_a_repaint_of_the_mouth_alone_blends_only_there_and_as_the_whole_box_would(photo, face_px, angle):
    """Compose blends only the rows and columns a repaint reaches; what it writes there is, bit for
    bit, what blending the whole box writes, and around it is the moved frame, rounded in."""
    t = similarity((320, 250), face_px, angle)
    flow = smooth_outputs(3).flow
    rng = np.random.default_rng(4)
    att = np.ones((1, S, S), np.float32)
    att[0, 84:110, 40:88] = rng.random((26, 48))  # a hard-edged mouth, noisy colour: any misplaced pixel shows
    col = rng.uniform(-1, 1, (3, S, S)).astype(np.float32)
    mouth = compose(photo, [FaceOutput(att, col, flow)], [t])
    moved = compose(photo, [FaceOutput(np.ones_like(att), col, flow)], [t])
    # Four painted dots near the crop's edges make the blended part the whole box.
    dots = np.ones_like(att)
    for y, x in ((64, 9), (64, 118), (9, 64), (118, 64)):
        dots[0, y, x] = 0.0
    whole = compose(photo, [FaceOutput(np.minimum(att, dots), col, flow)], [t])
    near_dots = cv2.dilate((compose(photo, [FaceOutput(dots, col, flow)], [t]) != moved).any(-1).astype(np.uint8),
                           np.ones((9, 9), np.uint8)).astype(bool)
    assert near_dots.sum() < 0.02 * near_dots.size
    assert np.array_equal(mouth[~near_dots], whole[~near_dots])
    painted = (mouth != moved).any(-1)
    assert painted.sum() > 200
    ys, xs = np.nonzero(painted)
    assert np.array_equal(mouth[: ys.min()], moved[: ys.min()]) and np.array_equal(mouth[ys.max() + 1:], moved[ys.max() + 1:])


@pytest.mark.parametrize("face_px,angle", [(480, 0.3), (384, -0.2)])  # 3x3-pixel grids
def test_a_repaint_of_the_mouth_alone_lands_where_the_every_pixel_reference_puts_it(photo, face_px, angle):
    """The part blended alone is upsampled in place: against resampling at every frame pixel it stays
    within the grid's few grey levels (a part misplaced by one frame pixel doubles them)."""
    t = similarity((320, 250), face_px, angle)
    flow = smooth_outputs(3).flow
    yy, xx = np.mgrid[0:S, 0:S]
    bump = np.exp(-(((yy - 97) / 6.0) ** 2 + ((xx - 64) / 12.0) ** 2))
    att = (1.0 - bump * (bump > 0.02))[None].astype(np.float32)
    col = np.broadcast_to(np.array([1.0, -1.0, 1.0], np.float32)[:, None, None], (3, S, S)).copy()  # magenta
    out = FaceOutput(att, col, flow)
    fast, native = compose(photo, [out], [t]), compose(photo, [out], [t], step=0)
    moved = compose(photo, [FaceOutput(np.ones_like(att), col, flow)], [t])
    painted = (fast != moved).any(-1) | (native != moved).any(-1)
    assert painted.sum() > 10_000
    diff = np.abs(fast.astype(np.int16) - native).max(-1)[painted]
    assert diff.mean() < 1.2 and np.percentile(diff, 99) <= 5, (diff.mean(), np.percentile(diff, 99))
