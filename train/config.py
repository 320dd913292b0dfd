"""Training settings: one dataclass, written to ``RUN/config.json`` so every run says how it was made.

Loss weights default to the original GANimation code (albertpumarola/GANimation,
``options/train_options.py``): lambda_D_prob 1, lambda_D_cond 4000, lambda_cyc 10,
lambda_mask 0.1, lambda_mask_smooth 1e-5, lambda_D_gp 10, G trained every 5th
iteration, Adam 1e-4 (0.5, 0.999), 20 epochs constant then 10 decaying linearly
(decay from 2/3 of the run), target AUs = another sample's plus U(-0.1, 0.1).
The flow weights are ours (the original has no flow head), and so is the ``flow`` stage: a cheap,
critic-free pretraining (it runs on a CPU) that teaches a flow model the AU basis's geometry, with
A -> 1 and C -> the warped input, so the adversarial stage starts from a model that already moves
features where the AUs say and only has to learn to paint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rtanim.errors import InputError

ARCH_CHOICES = ("lite", "ganimation")
STAGES = ("gan", "flow")
AU_SETS = ("ganimation", "extended")


@dataclass
class TrainConfig:
    """Every setting of a run; ``step`` = one batch = one critic update (the original's iteration)."""

    data: str = ""
    out: str = ""
    arch: str = "lite"
    flow: bool = False
    au_set: str = "ganimation"  # ganimation: the 17 AUs; extended: sided AUs too (needs a prepared dataset)
    width: int = 0  # 0: the architecture's width; set to train a custom-size generator
    n_res: int = -1  # -1: the architecture's residual blocks
    stage: str = "gan"  # gan: GANimation's adversarial training; flow: geometry pretraining (flow models)
    init: str = ""  # start weights: "" random | shipped (the packaged weights of this model) | PATH.safetensors
    steps: int = 30_000
    batch: int = 25  # per process; the paper's batch size
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    # optimisation
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 5  # train_G_every_n_iterations
    decay_start: float = 2 / 3  # fraction of steps after which both LRs decay linearly to 0
    ema_decay: float = 0.999
    # loss weights (original defaults)
    lambda_D_prob: float = 1.0
    lambda_D_cond: float = 4000.0
    lambda_D_gp: float = 10.0
    lambda_cyc: float = 10.0
    lambda_mask: float = 0.1
    lambda_mask_smooth: float = 1e-5
    # flow models only (ours)
    lambda_flow: float = 100.0  # L1 between F at the landmarks and the AU basis's motion (normalised units)
    lambda_flow_smooth: float = 1.0  # mean total variation of F
    lambda_keep: float = 10.0  # flow stage: mean(1 - A), so the warped input is used everywhere
    lambda_color: float = 1.0  # flow stage: L1 between C and the warped input (a sane C for the GAN stage)
    basis: str = "auto"  # auto (shipped, else fitted on the training set) | shipped | fit | PATH.npz
    # data
    target_noise: float = 0.1  # U(-n, n) added to the borrowed target AUs
    clip_targets: bool = True  # clip targets to [0, 1], the range the product feeds the model
    flip: bool = True  # random horizontal flips (sided AUs and landmarks swap sides)
    # critic size (original: 64 wide, 6 stride-2 convs); smaller only for smoke tests
    d_width: int = 64
    d_depth: int = 6
    # hardware
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True  # on CUDA
    threads: int = 0  # CPU threads per process (0: torch's default)
    # bookkeeping
    ckpt_every: int = 2000
    keep_ckpts: int = 3
    log_every: int = 50
    sample_every: int = 1000

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]

    def validate(self) -> TrainConfig:
        if self.arch not in ARCH_CHOICES:
            raise InputError("--arch", f"unknown architecture {self.arch!r} (choose {', '.join(ARCH_CHOICES)})")
        if self.stage not in STAGES:
            raise InputError("--set", f"stage must be one of {', '.join(STAGES)}", field="stage")
        if self.stage == "flow" and not self.flow:
            raise InputError("--set", "the flow stage trains the flow head: add --flow", field="stage")
        if self.au_set not in AU_SETS:
            raise InputError("--set", f"au_set must be one of {', '.join(AU_SETS)}", field="au_set")
        for name in ("steps", "batch", "n_critic", "ckpt_every", "log_every", "sample_every", "keep_ckpts"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name}", "must be at least 1")
        if not 0.0 <= self.decay_start <= 1.0:
            raise InputError("--set", "must be in [0, 1]", field="decay_start")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError("--set", "must be in [0, 1)", field="ema_decay")
        return self

    @property
    def model_name(self) -> str:
        return self.arch + ("+flow" if self.flow else "")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(path, "no such file") from None
        except json.JSONDecodeError as e:
            raise InputError(path, f"not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, dict):
            raise InputError(path, "expected a JSON object of settings")
        return cls().update(data, source=str(path))

    def update(self, values: dict[str, Any], source: str = "--set") -> TrainConfig:
        """Set fields from a mapping, checking names and types (a typo must not be ignored)."""
        types = {f.name: f.type for f in fields(self)}
        for key, value in values.items():
            if key not in types:
                raise InputError(source, f"unknown setting {key!r}", field=key)
            current = getattr(self, key)
            try:
                if isinstance(current, bool):
                    value = _to_bool(value)
                elif isinstance(current, tuple):
                    value = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
                elif isinstance(current, int):
                    number = float(value)
                    if not number.is_integer():
                        raise ValueError(value)
                    value = int(number)
                elif isinstance(current, float):
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError):
                raise InputError(source, f"bad value {value!r} for a {type(current).__name__}", field=key) from None
            setattr(self, key, value)
        return self


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["lambda_cyc=5", "flip=false"]`` -> a mapping (values are converted by :meth:`TrainConfig.update`)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--set", f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def build_config(
    data: str | Path | None,
    out: str | Path,
    *,
    arch: str | None = None,
    flow: bool | None = None,
    steps: int | None = None,
    batch: int | None = None,
    device: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    resume: bool = False,
) -> TrainConfig:
    """The run's settings: defaults < ``--config`` < explicit options < ``--set``; on resume, the run's own file.

    On resume only ``--steps`` (to extend a run) and ``--device`` may change: anything else would
    make the continued run differ from an uninterrupted one.
    """
    out = Path(out)
    if resume:
        saved = out / "config.json"
        if not saved.is_file():
            raise InputError(saved, "nothing to resume (no config.json in the run folder)")
        cfg = TrainConfig.load(saved)
        if steps is not None:
            cfg.steps = steps
        if device is not None:
            cfg.device = device
        if data is not None and str(Path(data).resolve()) != str(Path(cfg.data).resolve()):
            raise InputError("--data", f"the run was trained on {cfg.data}; resume with the same data")
        return cfg.validate()
    cfg = TrainConfig.load(config_file) if config_file is not None else TrainConfig()
    explicit = {"arch": arch, "flow": flow, "steps": steps, "batch": batch, "device": device}
    cfg.update({k: v for k, v in explicit.items() if v is not None}, source="options")
    cfg.update(parse_sets(sets))
    if data is None:
        raise InputError("--data", "missing: the prepared dataset to train on")
    cfg.data, cfg.out = str(Path(data).resolve()), str(out.resolve())
    return cfg.validate()
