"""A GAN training run's files: checkpoints, the state ``--resume`` needs, and the totals they carry.

Each checkpoint is the EMA generator (safetensors, what gets exported) beside the full training
state (torch.save: both nets, both optimisers, every RNG), named by ``latest.json``. Kept out of
the loop so what a checkpoint holds, and how a resume checks it, reads in one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist

from rtanim.errors import InputError
from rtanim.files import staged, write_text
from rtanim.models.ganimation import REGISTRY, Checkpoint, Generator, load_checkpoint, save_checkpoint, shipped_weights
from train.run_log import read_metrics

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.distributed import DistEnv


class Trainer(Protocol):
    """What a checkpoint saves of a training run and restores into it (:class:`train.trainer.Trainer`)."""

    run: Path
    step: int
    cfg: TrainConfig
    env: DistEnv
    G: Generator
    D: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    ema: Any  # train.trainer.EMA: .model (a Generator) and .updates
    data: Any  # train.dataset's dataset: .fingerprint
    rng: torch.Generator
    codes: Sequence[str]
    g_stats: dict[str, float]
    history: dict[str, Any]

log = logging.getLogger("rtanim.train")


def load_init(choice: str, model_name: str, G: Generator) -> dict[str, Any]:
    """Load ``cfg.init`` into G (the critic starts afresh); returns the training totals it carries."""
    if not choice:
        return {}
    if choice == "shipped":
        path = shipped_weights(model_name) if model_name in REGISTRY else None
        if path is None:
            raise InputError("--set", f"no shipped weights for {model_name} to start from", field="init")
    else:
        path = Path(choice)
        if not path.is_file():
            raise InputError(choice, "no such checkpoint", field="init")
    ckpt = load_checkpoint(path)
    if ckpt.spec != G.spec:
        raise InputError(path, f"is a {ckpt.spec.name} with {ckpt.spec.n_aus} AUs; this run trains a "
                               f"{G.spec.name} with {G.spec.n_aus}", field="init")
    G.load_state_dict(ckpt.state)  # FP16 checkpoints are cast to FP32
    return history_of(ckpt.extra)


def totals(trainer: Trainer) -> dict[str, str]:
    """Checkpoint metadata: training so far, this run included, per stage (steps and images)."""
    hist = {k: dict(v) for k, v in trainer.history.items()}
    stage = hist.setdefault(trainer.cfg.stage, {"steps": 0, "images": 0})
    stage["steps"] += trainer.step
    stage["images"] += trainer.step * trainer.cfg.batch * trainer.env.world
    return {"training": json.dumps(hist, sort_keys=True)}


def history_of(extra: dict[str, str]) -> dict[str, Any]:
    try:
        hist = json.loads(extra.get("training", "{}"))
    except json.JSONDecodeError:
        return {}
    return hist if isinstance(hist, dict) else {}


def training_totals(path: str | Path) -> dict[str, Any]:
    """``{stage: {"steps", "images"}}`` a checkpoint has been trained for, across runs."""
    return history_of(load_checkpoint(path).extra)


def ckpt_paths(run: Path, step: int) -> tuple[Path, Path]:
    d = run / "checkpoints"
    return d / f"generator_{step:07d}.safetensors", d / f"state_{step:07d}.pt"


def save(trainer: Trainer) -> Path | None:
    """EMA generator (our safetensors format) + training state (torch.save), then latest.json."""
    rng_states = [trainer.rng.get_state()]
    if trainer.env.world > 1:
        gathered: list[Any] = [None] * trainer.env.world
        dist.all_gather_object(gathered, trainer.rng.get_state())
        rng_states = gathered
    if not trainer.env.main:
        return None
    gen_path, state_path = ckpt_paths(trainer.run, trainer.step)
    gen_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(trainer.ema.model.spec, trainer.ema.model.state_dict(), trainer.data.fingerprint, totals(trainer))
    save_checkpoint(ckpt, gen_path)
    state = {
        "step": trainer.step,
        "G": trainer.G.state_dict(),
        "D": trainer.D.state_dict(),
        "opt_G": trainer.opt_G.state_dict(),
        "opt_D": trainer.opt_D.state_dict(),
        "rng": rng_states,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "ema_updates": trainer.ema.updates,
        "world": trainer.env.world,
        "fingerprint": trainer.data.fingerprint,
        "g_stats": dict(trainer.g_stats),
        "history": json.dumps(trainer.history),
    }
    with staged(state_path) as tmp:
        torch.save(state, tmp)
    save_checkpoint(ckpt, trainer.run / "generator.safetensors")
    latest = {"step": trainer.step, "generator": gen_path.name, "state": state_path.name}
    write_text(trainer.run / "latest.json", json.dumps(latest) + "\n")
    prune(trainer.run, trainer.cfg.keep_ckpts)
    return gen_path


def prune(run: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (generator and state together)."""
    gens = sorted((run / "checkpoints").glob("generator_*.safetensors"))
    for old in gens[: -keep]:
        step = int(old.stem.split("_")[1])
        for p in ckpt_paths(run, step):
            p.unlink(missing_ok=True)


def resume(trainer: Trainer) -> None:
    """Put the last checkpoint's state back into ``trainer``, after checking it fits this run's data and model."""
    latest = trainer.run / "latest.json"
    if not latest.is_file():
        raise InputError(trainer.run, "nothing to resume: no checkpoint in this run folder", field="--resume")
    info = json.loads(latest.read_text())
    state_path = trainer.run / "checkpoints" / info["state"]
    gen_path = trainer.run / "checkpoints" / info["generator"]
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(state_path, "checkpoint state is missing") from None
    except Exception as e:
        raise InputError(state_path, f"not a readable training state ({type(e).__name__}: {e})") from None
    if state.get("fingerprint") != trainer.data.fingerprint:
        raise InputError(trainer.cfg.data, "the dataset changed since this run started (fingerprint differs)")
    ckpt = load_checkpoint(gen_path)
    if tuple(ckpt.spec.au_codes) != tuple(trainer.codes) or ckpt.spec != trainer.G.spec:
        raise InputError(gen_path, f"checkpoint is a {ckpt.spec.name} with {ckpt.spec.n_aus} AUs; the run config "
                                   f"asks for {trainer.G.spec.name} with {len(trainer.codes)}")
    trainer.G.load_state_dict(state["G"])
    trainer.D.load_state_dict(state["D"])
    trainer.opt_G.load_state_dict(state["opt_G"])
    trainer.opt_D.load_state_dict(state["opt_D"])
    trainer.ema.model.load_state_dict(ckpt.state)
    trainer.ema.updates = int(state["ema_updates"])
    rng = state["rng"]
    if int(state["world"]) == trainer.env.world:
        trainer.rng.set_state(rng[trainer.env.rank])
    else:
        log.warning("resuming with %d processes instead of %d: batches will differ from an uninterrupted run",
                    trainer.env.world, state["world"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    trainer.step = int(state["step"])
    trainer.g_stats = {k: float(v) for k, v in state.get("g_stats", {}).items()}
    trainer.history = json.loads(state.get("history", "{}"))
    if trainer.env.main:  # forget metrics logged after this checkpoint, and record a longer --steps
        rows = [r for r in read_metrics(trainer.run) if r["step"] <= trainer.step]
        (trainer.run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        trainer.cfg.save(trainer.run / "config.json")
