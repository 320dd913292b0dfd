"""Training pairs for the ``refine`` model, built from prepared frames with no labels and no GPU.

Three kinds of pairs (input = a warped crop and its geometry maps, target = a real crop):

- **video**: two frames of one person in one clip whose rigid landmarks (nose bridge, eye
  corners, temples) line up after the canonical crop alignment; the source frame is warped by a
  thin-plate spline through the control landmarks to the target frame's real landmarks, and the
  net must turn that warp into the real target frame (open the mouth, close the lids);
- **cycle**: one real frame whose inner mouth (and sometimes eye openings) is filled from the
  lips around it, then warped to other AUs (mouth closed, eyes shut, jittered) and back: the
  input looks like what ``warp`` shows when it opens a closed mouth, the target is the real frame;
- **carry** (``PairMix.carry``): a cycle pair whose open mouth is not filled but reshaped (other
  lips-part / jaw-drop AUs, still open) and back, its real interior carried by the warp as at run
  time when an open mouth is re-expressed: the net learns to keep a mouth it can see;
- **identity**: the frame itself, which must come back unchanged.

Rare states are oversampled: targets with an open mouth or closed eyes are a few percent of the
frames, so each kind draws them at fixed rates (:class:`PairMix`). Held-out evaluation takes whole
people (:func:`rtanim.measure.people.clip_person`), since the same person appears in several clips.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import EXTENDED_CODES
from rtanim.face.align import CROP_SIZE
from rtanim.face.landmarks import EYE_A, EYE_B, INNER_MOUTH, OUTER_MOUTH, POSE_RIGID, polygon_mask
from rtanim.measure.people import clip_person
from rtanim.models.geometry import AUBasis, ThinPlate, WarpModel
from rtanim.models.reference import MIN_OPEN_PX, MovedReference, move_reference
from rtanim.models.refine import compose_flows, geometry_maps, mirrored_aus, warp_image, warp_inputs
from train.prepare import read_au_table

#: A mouth counts as wide open when its inner-lip polygon covers this many crop pixels (128 px
#: crop; about the top 13% of talking-head frames), as closed below CLOSED_MOUTH_PX.
OPEN_MOUTH_PX = 300.0
CLOSED_MOUTH_PX = 120.0
#: Eyes count as closed above this mean AU45 (MediaPipe's lid contour never quite closes, so the
#: blink blendshape says it better than the polygon's area), as open below OPEN_EYES_AU45.
CLOSED_EYES_AU45 = 0.6
OPEN_EYES_AU45 = 0.3
#: A reference mouth comes from the same clip at least this many frames from the target (about
#: a second at 12.5 fps), so it is another moment of the same person, not a near copy of the answer.
REFERENCE_GAP = 12


# ----------------------------------------------------------------------------- frames


@dataclass
class Frames:
    """Prepared crops of video frames (and stills) with what pairing needs."""

    names: list[str]
    clip: np.ndarray  # int id of the clip (or still) each frame comes from
    clips: list[str]  # clip id -> source (video path, or image group)
    index: np.ndarray  # frame number in its clip (-1 for stills)
    aus: np.ndarray  # [N, len(EXTENDED_CODES)] in [0, 1]
    landmarks: np.ndarray  # [N, 478, 2] crop px
    images: np.ndarray  # [N, S, S, 3] uint8
    mouth_px: np.ndarray = field(init=False)  # inner-mouth area, crop px
    blink: np.ndarray = field(init=False)  # mean AU45 of both eyes

    def __post_init__(self) -> None:
        self.mouth_px = np.array([polygon_mask(lm, [INNER_MOUTH]).sum() for lm in self.landmarks], np.float32)
        self.blink = self.aus[:, [EXTENDED_CODES.index("AU45L"), EXTENDED_CODES.index("AU45R")]].mean(1)

    @property
    def open_mouth(self) -> np.ndarray:
        return self.mouth_px > OPEN_MOUTH_PX

    @property
    def closed_eyes(self) -> np.ndarray:
        return self.blink > CLOSED_EYES_AU45

    def __len__(self) -> int:
        return len(self.names)

    @property
    def persons(self) -> list[str]:
        return [clip_person(self.clips[c]) for c in self.clip]

    def subset(self, keep: np.ndarray) -> Frames:
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Frames([self.names[i] for i in idx], self.clip[idx], self.clips, self.index[idx], self.aus[idx],
                      self.landmarks[idx], self.images[idx])


_FRAME = re.compile(r"_f(\d{6})_\d+$")


def prepare_folders(folders: Sequence[str | Path]) -> list[Path]:
    """Each path as a prepare folder, or the prepare folders directly inside it (sorted)."""
    out: list[Path] = []
    for folder in map(Path, folders):
        if (folder / "aus.csv").is_file():
            out.append(folder)
            continue
        subs = sorted(p for p in folder.iterdir() if (p / "aus.csv").is_file()) if folder.is_dir() else []
        if not subs:
            raise InputError(folder, "not an rtanim prepare folder (no aus.csv), nor a folder of them", field="--data")
        out += subs
    return out


def load_frames(folders: Sequence[str | Path], limit: int = 0) -> Frames:
    """Every crop of ``rtanim prepare`` folders (video frames carry their clip and frame number)."""
    names: list[str] = []
    clip: list[int] = []
    index: list[int] = []
    aus: list[np.ndarray] = []
    lms: list[np.ndarray] = []
    images: list[np.ndarray] = []
    clips: dict[str, int] = {}
    for folder in prepare_folders(folders):
        table = folder / "aus.csv"
        n, _, a, codes = read_au_table(table)
        groups = [r.split(",")[2] for r in table.read_text().splitlines()[1:] if r.strip()]
        try:
            lm = np.load(folder / "landmarks.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(folder / "landmarks.npy", f"missing or unreadable ({e})", field="--data") from None
        if lm.shape[0] != len(n) or lm.ndim != 3:
            raise InputError(folder / "landmarks.npy", f"has {lm.shape[0]} rows for {len(n)} crops", field="--data")
        missing = [c for c in EXTENDED_CODES if c not in codes]
        if missing:
            raise InputError(table, f"lacks AU columns {missing[:3]}", field="--data")
        cols = [codes.index(c) for c in EXTENDED_CODES]
        for i, name in enumerate(n):
            if limit and len(names) >= limit:
                break
            rgb = cv2.imread(str(folder / "imgs" / f"{name}.jpg"), cv2.IMREAD_COLOR)
            if rgb is None or rgb.shape[:2] != (CROP_SIZE, CROP_SIZE):
                continue
            m = _FRAME.search(name)
            names.append(name)
            clip.append(clips.setdefault(groups[i], len(clips)))
            index.append(int(m.group(1)) if m else -1)
            aus.append(a[i, cols])
            lms.append(lm[i, :, :2])
            images.append(cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB))
    if not names:
        raise InputError(", ".join(map(str, folders)), "no usable face crops", field="--data")
    return Frames(names, np.array(clip), list(clips), np.array(index), np.array(aus, np.float32),
                  np.array(lms, np.float32), np.array(images, np.uint8))


#: Share of the clips' open-mouth frames whose people the trainer holds out (its --held-out default).
HELD_OUT = 0.15


def split_people(frames: Frames, fraction: float = HELD_OUT, seed: int = 0) -> np.ndarray:
    """Held-out mask: whole people of the video clips, drawn until ``fraction`` of the clips'
    open-mouth frames are held out (so the test has mouths to open), seeded. Stills (no frame
    number) always train: the self-reenactment test needs clips, and adding stills must not change
    which people it holds out."""
    video = frames.index >= 0
    persons = np.array(frames.persons)
    order = sorted(set(persons[video]))
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    open_ = frames.open_mouth & video
    want = fraction * max(int(open_.sum()), 1)
    held: set[str] = set()
    have = 0
    for p in order:
        if have >= want:
            break
        held.add(p)
        have += int(open_[persons == p].sum())
    return np.isin(persons, sorted(held)) & video


# ----------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class PairMix:
    """How often each pair kind and each rare target state is drawn."""

    video: float = 0.55
    cycle: float = 0.3  # the rest: identity
    open_mouth: float = 0.4  # of targets: an open mouth
    closed_eyes: float = 0.25  # of targets: closed eyes (the rest uniform)
    max_rigid_px: float = 2.5  # video pairs: mean rigid-landmark misalignment, crop px
    basis_warp: float = 0.5  # video pairs warped as at run time (AU basis, target AUs), not to the real landmarks
    hide_eyes: float = 0.25  # cycle pairs with open eyes: also fill the eye openings
    grey: float = 0.1  # pairs turned to greyscale (old photos, webcams in low light)
    jitter: float = 0.5  # pairs with random per-channel gain and brightness
    residual_flow: bool = False  # basis-warped video pairs carry the flow that supervises a flow head
    reference: float = 0.0  # pairs shown a remembered open mouth of the same clip, where it has one
    mirror: float = 0.0  # pairs mirrored left-right, sided AUs swapped: more faces to learn mouths from
    #: video pairs whose target's mouth is closed: share that prefer an open-mouthed source, so the net
    #: learns to close a mouth (presets are absolute: "wink" on a laughing face closes it)
    closing: float = 0.0
    #: cycle pairs with an open mouth: share that carry its interior instead of filling it (kind "carry")
    carry: float = 0.0
    #: geometry gets the source's own inner mouth as a fifth channel (RefineSpec.paint_keep_stretch)
    own_mouth: bool = False


@dataclass
class Pair:
    warped: np.ndarray  # S x S x 3 uint8: the network's image input
    geometry: np.ndarray  # 4 (5 with PairMix.own_mouth) x S x S float32
    aus: np.ndarray  # target AUs [K]
    target: np.ndarray  # S x S x 3 uint8
    weight: np.ndarray  # S x S float32: where the reconstruction counts (face, x4 mouth and eyes)
    kind: str
    #: 2 x S x S float32: the residual flow that would carry the input's geometry to the target's
    #: real landmarks (zero where the input is already warped to them); supervises a flow head.
    flow: np.ndarray | None = None
    #: a remembered open mouth of the same person moved onto the target's lips (rtanim.models.reference)
    reference: MovedReference | None = None
    frame: int = -1  # the target's frame (which clip a reference may come from)
    source: int = -1  # a video pair's source frame (-1 for the other kinds)
    target_landmarks: np.ndarray | None = None  # where the input's lips are meant to be (crop px)
    #: 2 x S x S float32: the self-reenactment test's mouth box and eye boxes on the real target
    #: (:func:`score_boxes`), for the trainer's per-pair PSNR term
    boxes: np.ndarray | None = None


def score_boxes(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The boxes the self-reenactment test scores (rtanim.measure.reenact: lips and eyes, padded) as
    [2,S,S] float32: the mouth box, then both eye boxes."""
    from rtanim.face.landmarks import EYES, OUTER_MOUTH, box_mask

    lm = np.asarray(landmarks)[:, :2]
    mouth = box_mask(lm[list(OUTER_MOUTH)], size)
    eyes = box_mask(lm[list(EYES[0])], size) | box_mask(lm[list(EYES[1])], size)
    return np.stack([mouth, eyes]).astype(np.float32)


def region_weight(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Loss weight: 1 on the face (landmark hull), 5 around the mouth and the eyes."""
    hull = cv2.convexHull(np.round(landmarks[:468] * 16).astype(np.int32))
    w = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(w, hull, 1, lineType=cv2.LINE_8, shift=4)
    focus = polygon_mask(landmarks, [OUTER_MOUTH, EYE_A, EYE_B], size)
    focus = cv2.dilate(focus, np.ones((7, 7), np.uint8))
    return w.astype(np.float32) + 4.0 * focus


def fill_regions(image: np.ndarray, landmarks: np.ndarray, mouth: bool, eyes: bool) -> np.ndarray:
    """The crop with its inner mouth / eye openings inpainted from the pixels around them."""
    loops = ([INNER_MOUTH] if mouth else []) + ([EYE_A, EYE_B] if eyes else [])
    if not loops:
        return image
    mask = (polygon_mask(landmarks, loops) > 0.05).astype(np.uint8)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA)


class PairMaker:
    """Draws random training pairs from :class:`Frames` (one per call, numpy, a few ms)."""

    def __init__(self, frames: Frames, basis: AUBasis | None = None, mix: PairMix = PairMix(), seed: int = 0) -> None:
        self.f, self.mix = frames, mix
        self.basis = AUBasis.load() if basis is None else basis
        if tuple(self.basis.codes) != EXTENDED_CODES:  # frames' AU vectors are in EXTENDED_CODES order
            raise ValueError(f"the AU basis has codes {self.basis.codes[:4]}..., expected EXTENDED_CODES")
        self.spline = ThinPlate(CROP_SIZE)
        self.warp = WarpModel(self.basis)
        self.rng = np.random.default_rng(seed)
        self.open = np.flatnonzero(frames.open_mouth)
        self.closed = np.flatnonzero(frames.closed_eyes)
        by_clip: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(frames.clip):
            if frames.index[i] >= 0:
                by_clip[int(c)].append(i)
        self.by_clip = {c: np.array(v) for c, v in by_clip.items() if len(v) > 1}
        self.video_ok = np.array([int(c) in self.by_clip for c in frames.clip])
        self.closed_mouth = np.flatnonzero(self.video_ok & (frames.mouth_px <= CLOSED_MOUTH_PX))

    # -- drawing
    def _target(self, pool_ok: np.ndarray | None = None) -> int:
        r = self.rng.random()
        pool = self.open if r < self.mix.open_mouth else self.closed if r < self.mix.open_mouth + self.mix.closed_eyes else None
        if pool is not None and pool_ok is not None:
            pool = pool[pool_ok[pool]]
        if pool is None or len(pool) == 0:
            pool = np.flatnonzero(pool_ok) if pool_ok is not None else np.arange(len(self.f))
        return int(self.rng.choice(pool))

    def rigid_error(self, i: int, j: int) -> float:
        d = self.f.landmarks[i, list(POSE_RIGID)] - self.f.landmarks[j, list(POSE_RIGID)]
        return float(np.linalg.norm(d, axis=1).mean())

    def _source(self, t: int, tries: int = 12) -> int | None:
        """A frame of t's clip that lines up with it, preferring a different mouth / eye state."""
        cands = self.by_clip[int(self.f.clip[t])]
        cands = cands[cands != t]
        f = self.f
        want_closed_mouth = f.mouth_px[t] > OPEN_MOUTH_PX and self.rng.random() < 0.7
        want_open_mouth = f.mouth_px[t] <= CLOSED_MOUTH_PX and self.rng.random() < self.mix.closing
        if want_open_mouth:  # open mouths are a few in a clip: look at more of it
            tries *= 3
        pick = self.rng.choice(cands, size=min(tries, len(cands)), replace=False)
        want_open_eyes = f.blink[t] > CLOSED_EYES_AU45 and self.rng.random() < 0.7
        best, best_score = None, np.inf
        for s in pick:
            err = self.rigid_error(t, int(s))
            if err > self.mix.max_rigid_px:
                continue
            score = err
            if want_closed_mouth and f.mouth_px[s] > CLOSED_MOUTH_PX:
                score += 10.0
            if want_open_eyes and f.blink[s] > OPEN_EYES_AU45:
                score += 10.0
            if want_open_mouth and f.mouth_px[s] <= CLOSED_MOUTH_PX:
                score += 10.0
            if score < best_score:
                best, best_score = int(s), score
        return best

    def __call__(self) -> Pair:
        pair = self._draw()
        if self.mix.reference > 0 and self.rng.random() < self.mix.reference:
            pair.reference = self.reference_for(pair)
        pair = recolour(pair, self.rng, self.mix)
        if self.mix.mirror > 0 and self.rng.random() < self.mix.mirror:
            pair = mirror(pair)
        return pair

    def reference_for(self, pair: Pair, tries: int = 3) -> MovedReference | None:
        """The widest of a few open mouths of the target's clip, at least REFERENCE_GAP frames
        from it (what a run remembers is the widest mouth seen so far), moved onto the lips the
        pair's input shows; None for stills and clips without another open mouth."""
        t, lm = pair.frame, pair.target_landmarks
        if t < 0 or lm is None or self.f.index[t] < 0 or int(self.f.clip[t]) not in self.by_clip:
            return None
        cands = self.by_clip[int(self.f.clip[t])]
        cands = cands[(np.abs(self.f.index[cands] - self.f.index[t]) >= REFERENCE_GAP)
                      & (self.f.mouth_px[cands] >= MIN_OPEN_PX)]
        if len(cands) == 0:
            return None
        pick = self.rng.choice(cands, size=min(tries, len(cands)), replace=False)
        r = int(pick[np.argmax(self.f.mouth_px[pick])])
        return move_reference(self.f.images[r], self.f.landmarks[r], lm)

    def _draw(self) -> Pair:
        r = self.rng.random()
        if r < self.mix.video and self.video_ok.any():
            for _ in range(8):
                if self.rng.random() < 0.5 * self.mix.closing and len(self.closed_mouth):  # a mouth to close
                    t = int(self.rng.choice(self.closed_mouth))
                else:
                    t = self._target(self.video_ok)
                s = self._source(t)
                if s is not None:
                    return self.video_pair(s, t)
        if r < self.mix.video + self.mix.cycle:
            return self.cycle_pair(self._target())
        return self.identity_pair(self._target())

    # -- the three kinds
    def tps_flow(self, src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
        """Backward flow [2,S,S] (normalised) that carries ``src_pts`` of the input to ``dst_pts``."""
        field_px = self.spline.field(dst_pts, src_pts - dst_pts)
        return (field_px * (2.0 / CROP_SIZE)).transpose(2, 0, 1).astype(np.float32)

    def video_pair(self, s: int, t: int, basis: bool | None = None) -> Pair:
        """Source frame s warped towards target frame t: through the control landmarks to t's real
        landmarks (sharp supervision), or, as at run time, by the AU basis from s's AUs to t's (the
        net then learns where real mouths and lids go for those AUs, not only where the basis puts them)."""
        f, ctrl = self.f, self.basis.controls
        basis = self.rng.random() < self.mix.basis_warp if basis is None else basis
        residual = None
        if basis:
            warped, geo, _, target = warp_inputs(self.warp, f.images[s], f.landmarks[s], f.aus[s], f.aus[t],
                                                      own_mouth=self.mix.own_mouth)
            if self.mix.residual_flow:  # where the basis put the control landmarks -> the real ones
                residual = self.tps_flow(target[ctrl], f.landmarks[t, ctrl])
        else:
            flow = self.tps_flow(f.landmarks[s, ctrl], f.landmarks[t, ctrl])
            target = f.landmarks[t]
            warped, geo = warp_image(f.images[s], flow), geometry_maps(target, f.landmarks[s], flow,
                                                                         own_mouth=self.mix.own_mouth)
        weight = np.maximum(region_weight(f.landmarks[t]), region_weight(target))
        return Pair(warped, geo, f.aus[t], f.images[t], weight, "video", residual, frame=t, source=s,
                    target_landmarks=target, boxes=score_boxes(f.landmarks[t]))

    def cycle_pair(self, i: int) -> Pair:
        f, ctrl, b = self.f, self.basis.controls, self.basis
        lm, a = f.landmarks[i].astype(np.float64), f.aus[i]
        hide_mouth = bool(f.mouth_px[i] > CLOSED_MOUTH_PX)
        hide_eyes = bool(f.blink[i] < OPEN_EYES_AU45 and self.rng.random() < self.mix.hide_eyes)
        codes = b.codes
        mouth_aus = [codes.index("AU25"), codes.index("AU26")]
        other = np.clip(a + self.rng.normal(0.0, 0.15, a.shape), 0.0, 1.0)

        def moved() -> np.ndarray:  # the landmarks at the other AUs
            return lm + b.displacement(b.vector(other) - b.vector(a))[: len(lm)]

        carry = False
        if hide_mouth and self.mix.carry > 0 and self.rng.random() < self.mix.carry:  # reshape the open mouth, keep its interior
            other[mouth_aus] = self.rng.uniform(0.0, 1.0, 2)
            lm_b = moved()  # (before the eyes are set shut below: a carry pair's round trip leaves them open)
            carry = polygon_mask(lm_b, [INNER_MOUTH]).sum() > CLOSED_MOUTH_PX  # still open: nothing squeezed out
            hide_mouth = not carry
        if hide_mouth:
            other[mouth_aus] = 0.0
        if hide_eyes:
            other[[codes.index("AU45L"), codes.index("AU45R")]] = 1.0
        if not carry:
            lm_b = moved()
        filled = fill_regions(f.images[i], lm, hide_mouth, hide_eyes)
        back = self.tps_flow(lm_b[ctrl], lm[ctrl])
        warped = warp_image(filled, compose_flows(self.tps_flow(lm[ctrl], lm_b[ctrl]), back))
        if carry:  # the source maps as at run time: the reshaped mouth carried back by the warp
            geo = geometry_maps(lm, lm_b, back, source_hidden=(False, hide_eyes), own_mouth=self.mix.own_mouth)
        else:
            geo = geometry_maps(lm, lm, None, source_hidden=(hide_mouth, hide_eyes), own_mouth=self.mix.own_mouth)
        return Pair(warped, geo, a, f.images[i], region_weight(lm), "carry" if carry else "cycle", frame=i, target_landmarks=lm,
                    boxes=score_boxes(lm))

    def identity_pair(self, i: int) -> Pair:
        f = self.f
        geo = geometry_maps(f.landmarks[i], f.landmarks[i], None, own_mouth=self.mix.own_mouth)
        return Pair(f.images[i], geo, f.aus[i], f.images[i], region_weight(f.landmarks[i]), "identity", frame=i,
                    target_landmarks=f.landmarks[i], boxes=score_boxes(f.landmarks[i]))


def recolour(pair: Pair, rng: np.random.Generator, mix: PairMix) -> Pair:
    """The same random colour change on input and target: greyscale (``mix.grey``) or per-channel
    gains and a brightness shift (``mix.jitter``). The talking-head clips are all colour and evenly
    lit; without this the net painted pink lips and lids onto greyscale photos."""
    r = rng.random()
    if r < mix.grey:
        def change(x: np.ndarray) -> np.ndarray:
            return np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None], 3, -1)
    elif r < mix.grey + mix.jitter:
        gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, 3)
        bias = rng.uniform(-20, 20)

        def change(x: np.ndarray) -> np.ndarray:
            return np.clip(x.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    else:
        return pair
    ref = pair.reference
    if ref is not None:
        ref = MovedReference(change(ref.rgb), ref.window, ref.inner)
    return replace(pair, warped=change(pair.warped), target=change(pair.target), reference=ref)


#: EXTENDED_CODES index of each code's other side (AU12L <-> AU12R; unsided codes map to themselves).
MIRRORED_AUS = np.array(mirrored_aus(EXTENDED_CODES))


def mirror(pair: Pair) -> Pair:
    """The pair seen in a mirror: every image and map flipped left-right, the sided AUs swapped and
    a flow's x component negated. The held-out people are few and the net learns their mouths from
    some hundred others (self-reenactment on training people: +2.1 dB over warp, held out +0.9, session 8),
    so a mirrored face is another face to learn from. ``target_landmarks`` keep their indices
    (only their x is mirrored): they are read only when the pair is drawn, before this."""
    def hwc(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, ::-1])

    def chw(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[..., ::-1])

    size = pair.target.shape[1]
    flow = None
    if pair.flow is not None:
        flow = chw(pair.flow)
        flow[0] *= -1.0
    ref = pair.reference
    if ref is not None:
        ref = MovedReference(hwc(ref.rgb), chw(ref.window), chw(ref.inner))
    lm = None
    if pair.target_landmarks is not None:
        lm = np.array(pair.target_landmarks, np.float64, copy=True)
        lm[:, 0] = size - 1 - lm[:, 0]
    return replace(pair, warped=hwc(pair.warped), target=hwc(pair.target), geometry=chw(pair.geometry),
                   aus=pair.aus[MIRRORED_AUS], weight=chw(pair.weight), flow=flow, reference=ref,
                   target_landmarks=lm, boxes=None if pair.boxes is None else chw(pair.boxes))


def mix_report(frames: Frames, maker: PairMaker, n: int = 2000) -> dict[str, float]:
    """Measured share of pair kinds and of rare target states over ``n`` draws (for MODELS.md)."""
    kinds: dict[str, int] = defaultdict(int)
    open_, closed, refs, closing = 0, 0, 0, 0
    k45 = [EXTENDED_CODES.index("AU45L"), EXTENDED_CODES.index("AU45R")]
    for _ in range(n):
        p = maker()
        kinds[p.kind] += 1
        open_ += int(p.geometry[0].sum() > OPEN_MOUTH_PX)
        closed += int(p.aus[k45].mean() > CLOSED_EYES_AU45)
        refs += int(p.reference is not None)
        # a mouth the net must close: a video pair whose source frame's mouth is open and whose target's
        # is closed (the carried-interior map undercounts: the warp squeezes what it carries)
        closing += int(p.source >= 0 and maker.f.mouth_px[p.source] > CLOSED_MOUTH_PX
                       and maker.f.mouth_px[p.frame] <= CLOSED_MOUTH_PX)
    out = {f"kind_{k}": v / n for k, v in sorted(kinds.items())}
    out["target_open_mouth"] = open_ / n
    out["target_closed_eyes"] = closed / n
    out["pairs_closing_mouth"] = closing / n
    if maker.mix.reference > 0:
        out["with_reference"] = refs / n
    out["frames_open_mouth"] = float(frames.open_mouth.mean())
    out["frames_closed_eyes"] = float(frames.closed_eyes.mean())
    return out
