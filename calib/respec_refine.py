"""The same refine weights with other inference settings (paint region, mirror average, detail).

    python calib/respec_refine.py train/init/refine.safetensors runs/mirror.safetensors --mirror-average on
    python calib/respec_refine.py IN OUT --paint-small 4 --paint-min 0.4

The paint region and the mirror average live in the checkpoint's spec (rtanim.models.refine.RefineSpec)
and act inside the graph, so they change what a model paints without retraining: this is how
MODELS.md tries them zero-shot and how a shipped file gets them. Each change is appended to the
totals' ``respec`` list; the weights are copied bit for bit.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    from rtanim.models.refine import add_paint_options

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="refine checkpoint")
    p.add_argument("dst", type=Path, help="where to write the respecified copy (not the source)")
    p.add_argument("--mirror-average", choices=("on", "off"), default=None)
    p.add_argument("--lids", choices=("on", "off"), default=None,
                   help="paint closed lids where the warp shuts an open eye (rtanim.models.lids)")
    add_paint_options(p)
    p.add_argument("--basis", choices=("shipped", "regional"), default=None,
                   help="the AU basis whose warp the net paints over (rtanim.models.refine.BASES)")
    a = p.parse_args(argv)

    from rtanim.errors import InputError
    from rtanim.models.refine import BASES, RefineNet, load_refine, paint_option_problem, paint_settings, save_refine

    try:
        if a.dst.resolve() == a.src.resolve():
            raise InputError(a.dst, "would overwrite the source checkpoint; choose another name", field="dst")
        net, extra = load_refine(a.src)
        changes = {k: v for k, v in (("mirror_average", None if a.mirror_average is None else a.mirror_average == "on"),
                                     ("lids", None if a.lids is None else a.lids == "on"),
                                     *paint_settings(a).items(), ("detail_sigma", a.detail_sigma),
                                     ("detail_spare_mouth", None if a.detail_spare_mouth is None
                                      else a.detail_spare_mouth == "on"),
                                     ("basis", None if a.basis is None else BASES[a.basis])) if v is not None}
        bad = paint_option_problem(a.paint_grow, a.paint_min, a.paint_small, a.paint_keep, a.detail_sigma,
                                   a.paint_keep_overlap, a.paint_keep_stretch)
        if bad is not None:
            raise InputError(a.src, bad[1], field=bad[0])
        if any(k.startswith("paint") for k in changes) and not net.spec.paint_mask:
            raise InputError(a.src, "this checkpoint has no paint mask to change", field="--paint-*")
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    out = RefineNet(replace(net.spec, **changes))
    out.load_state_dict(net.state_dict())
    training = dict(extra.get("training", {}))
    steps = training.get("steps", 0)
    training["respec"] = [*training.get("respec", []),
                          {"at_step": steps, **{k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}}]
    save_refine(out, a.dst, extra={**extra, "training": training})
    print(f"wrote {a.dst}: {', '.join(f'{k}={v}' for k, v in changes.items()) or 'unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
