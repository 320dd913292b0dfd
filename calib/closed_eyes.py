"""Closing open eyes on held-out stills: does the output read as shut, and is any white left?

    python calib/closed_eyes.py -o runs/eval/closed_eyes warp default lids=/tmp/lids.safetensors

The self-reenactment test has few closed-eye targets, and their sources already squint; a user who
asks a photo for ``eyes_closed`` or a wink starts from open eyes. So this takes the still-image
eval's faces (``rtanim eval``'s ``--faces`` over the expressive set, the same people training stills
leave out), asks each model for ``eyes_closed``, ``wink_left`` and ``wink_right``, and reports per
model (medians over faces):

- **AU45 read back** by MediaPipe on the output, per eye that was asked to close (1 = read as shut);
- **sclera share**: sclera-like pixels inside the source's open eye openings
  (rtanim.measure.look.lid_look, against the skin round the eyes; the input's own share beside it);
- **identity**: dlib distance between the input and the output;

and writes ``eyes_strip.png``: each face's eyes, input then every model, for ``eyes_closed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

#: Preset -> which AU45 side(s) it shuts (the read-back is scored on those).
CLOSING = {"eyes_closed": ("AU45L", "AU45R"), "wink_left": ("AU45L",), "wink_right": ("AU45R",)}


def eye_band(image: np.ndarray, face, height: int = 56, width: int = 160) -> np.ndarray:  # noqa: ANN001
    """Both eyes of ``face`` cut from ``image`` at crop scale (the crop's rows round the eyes)."""
    import cv2

    from rtanim.face.align import crop
    from rtanim.face.landmarks import EYES

    c = crop(image, face.transform)
    pts = face.transform.to_crop(face.landmarks)[[i for loop in EYES for i in loop], :2]
    cy, cx = pts[:, 1].mean(), pts[:, 0].mean()
    half_w = max(float(np.ptp(pts[:, 0])) * 0.8, 20.0)
    half_h = half_w * height / width
    y0, y1 = int(max(cy - half_h, 0)), int(min(cy + half_h, c.shape[0]))
    x0, x1 = int(max(cx - half_w, 0)), int(min(cx + half_w, c.shape[1]))
    return cv2.resize(c[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_CUBIC)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="LABEL=MODEL or MODEL (a model name or a checkpoint path)")
    p.add_argument("-o", "--out", type=Path, required=True, help="report folder (closed_eyes.md, .json, eyes_strip.png)")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/faces/expressive")
    p.add_argument("--faces", type=int, default=16)
    a = p.parse_args(argv)

    import cv2

    from rtanim.checks import output_folder
    from rtanim.commands.image import reexpress, track_still
    from rtanim.errors import InputError
    from rtanim.expression.timeline import timeline_from_dict
    from rtanim.face.align import crop
    from rtanim.files import read_image
    from rtanim.measure.evaluate import Identity, load_generator, still_files
    from rtanim.measure.look import lid_look

    try:
        out = output_folder(a.out)
        if not a.data.is_dir():
            raise InputError(a.data, "no such folder (the expressive faces of ../shared/data)", field="--data")
        labels = [m.split("=", 1) if "=" in m else (m, m) for m in a.models]
        gens = {label: load_generator(model) for label, model in labels}
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    identity = Identity.create()
    files, _ = still_files(a.data, a.faces)
    rows, strip = {label: {k: [] for k in ("au45", "sclera", "identity")} for label, _ in labels}, []
    sclera_in = []
    used = 0
    for path in files:
        if used >= a.faces:
            break
        image = read_image(path)
        faces = track_still(image, 1)
        if not faces:
            continue
        face, used = faces[0], used + 1
        src = face.transform.to_crop(face.landmarks)[:, :2]
        source_crop = crop(image, face.transform)
        sclera_in.append(lid_look(source_crop, source_crop, src)["sclera_real"])
        base = identity.embed(image, face.bbox) if identity else None
        bands = [eye_band(image, face)]
        for label, _ in labels:
            for preset, sides in CLOSING.items():
                target = timeline_from_dict({"preset": preset}).at(0.0, face.aus)
                result = reexpress(image, [face], [target], gens[label]).image
                back = track_still(result, 1)
                if back:
                    rows[label]["au45"].append(float(np.mean([back[0].aus[s] for s in sides])))
                if preset != "eyes_closed":
                    continue
                rows[label]["sclera"].append(lid_look(crop(result, face.transform), source_crop, src)["sclera_out"])
                if identity is not None and back:
                    rows[label]["identity"].append(float(np.linalg.norm(identity.embed(result, back[0].bbox) - base)))
                bands.append(eye_band(result, face))
        strip.append(np.concatenate(bands, 1))
        print(f"{path.name}: done ({used}/{a.faces})", flush=True)
    summary = {label: {k: (float(np.nanmedian(v)) if v else None) for k, v in r.items()} for label, r in rows.items()}
    summary["input"] = {"sclera": float(np.nanmedian(sclera_in))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "closed_eyes.json").write_text(json.dumps({"faces": used, "summary": summary, "rows": rows}, indent=1))
    lines = [f"# Closing open eyes on {used} held-out stills", "",
             "Medians over faces. AU45 read back on the eyes asked to close (eyes_closed, wink_left, "
             "wink_right); sclera share inside the source's eye openings and identity (dlib distance to "
             "the input) for eyes_closed.", "",
             "| model | AU45 read back | sclera share | identity |", "|---|---|---|---|",
             f"| input | | {summary['input']['sclera']:.3f} | |"]
    for label, _ in labels:
        s = summary[label]
        lines.append("| " + " | ".join([label] + [("" if s[k] is None else f"{s[k]:.3f}")
                                                  for k in ("au45", "sclera", "identity")]) + " |")
    (out / "closed_eyes.md").write_text("\n".join(lines) + "\n")
    picture = np.concatenate(strip, 0)
    head = np.zeros((20, picture.shape[1], 3), np.uint8)
    for i, name in enumerate(["input"] + [label for label, _ in labels]):
        cv2.putText(head, name[:18], (4 + 160 * i, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(out / "eyes_strip.png"), cv2.cvtColor(np.concatenate([head, picture], 0), cv2.COLOR_RGB2BGR))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
