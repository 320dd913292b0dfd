"""What a ``refine`` training run keeps between steps and sessions: the resumable state file (FP32
weights, Adam moments, the weight average), the totals that say which setting held from which step,
and the sample grids it writes as it goes. Split from :mod:`train.refine_train` (the loop)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rtanim.models.refine import RefineNet, RefineSpec
from train.state_io import adam_tensors, carry_adam, restore_adam


def respecified(net: RefineNet, opt: torch.optim.Optimizer, spec: RefineSpec,
                lr: float) -> tuple[torch.optim.Optimizer, RefineNet]:
    """(optimiser, net) with the same weights and Adam moments under another spec of the same
    shapes (a paint region, the warp's detail): what the net computes changes, not what it holds."""
    other = RefineNet(spec)
    other.load_state_dict(net.state_dict())
    return carry_adam(net, opt, other, lr), other


def make_ema(net: RefineNet, decay: float) -> AveragedModel:
    """An exponential moving average of ``net``'s weights (torch's own), starting at them."""
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def restore_ema(ema: AveragedModel, saved: dict[str, torch.Tensor] | None, updates: int) -> bool:
    """Load a saved average into ``ema`` when it fits the net as it is now (a grown or widened net
    restarts its average from the current weights); True when it was loaded."""
    own = ema.module.state_dict()
    if not saved or saved.keys() != own.keys() or any(saved[k].shape != v.shape for k, v in own.items()):
        return False
    ema.module.load_state_dict(saved)
    ema.n_averaged.fill_(updates)
    return True


def save_state(path: Path, net: RefineNet, opt: torch.optim.Optimizer, totals: dict,
               ema: AveragedModel | None = None) -> None:
    """FP32 weights + Adam moments (+ the weight average) in one safetensors file (no pickle), atomically."""
    from safetensors.torch import save_file

    from rtanim.files import staged

    tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    moments, steps = adam_tensors(net, opt)
    tensors.update(moments)
    meta = {"format": "rtanim.refine-state", "totals": json.dumps(totals), "opt_steps": steps,
            "spec": net.spec.to_json()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().float().cpu().contiguous() for k, v in ema.module.state_dict().items()})
        meta["ema_updates"] = str(int(ema.n_averaged))
    with staged(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_state(path: Path, opt_lr: float) -> tuple[RefineNet, torch.optim.Optimizer, dict, dict, int]:
    """(net, optimiser, totals, the saved weight average's tensors (empty if none), its updates)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    net = RefineNet(RefineSpec.from_json(meta["spec"]))
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    opt = torch.optim.Adam(net.parameters(), lr=opt_lr, betas=(0.9, 0.99))
    restore_adam(net, opt, tensors, meta["opt_steps"])
    averaged = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    return net, opt, json.loads(meta["totals"]), averaged, int(meta.get("ema_updates", 0))


def record_setting(totals: dict, key: str, name: str, value: object, what: str, default: object = 0.0) -> None:
    """Append ``{"from_step": ..., name: value}`` to ``totals[key]`` when ``value`` differs from the
    last one recorded (``default`` before any), so the totals say from which step each setting held
    and a run that never leaves the default records nothing."""
    if value != (totals.get(key) or [{name: default}])[-1][name]:
        totals.setdefault(key, []).append({"from_step": totals["steps"], name: value})
        shown = f"{value:g}" if isinstance(value, int | float) else value
        print(f"{what} {shown} from step {totals['steps']}", flush=True)


def empty_totals() -> dict:
    return {"steps": 0, "images": 0, "seconds": 0.0, "runs": 0}


def sample_grid(path: Path, b: dict[str, torch.Tensor], out: torch.Tensor, att: torch.Tensor, n: int = 6) -> None:
    import cv2

    def img(x: torch.Tensor) -> np.ndarray:
        return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()

    rows = []
    for i in range(min(n, out.shape[0])):
        a = (att[i, 0].detach().clamp(0, 1) * 255).round().byte().cpu().numpy()
        cols = [img(b["warped"][i]), img(out[i]), img(b["target"][i]), np.stack([a] * 3, -1)]
        if "reference" in b:  # what the net was shown of a remembered mouth (grey: nothing)
            cols.append(img(b["reference"][i, :3]))
        rows.append(np.concatenate(cols, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
