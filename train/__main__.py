"""``python -m train`` / ``torchrun --nproc_per_node K -m train``: the same options as ``rtanim train``.

torchrun starts one process per device and sets RANK / WORLD_SIZE; the trainer joins the process
group itself (nccl on GPUs, gloo on CPUs). Errors end the process with the CLI's exit codes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtanim.errors import InputError, RunError
from train.config import ARCH_CHOICES, build_config
from train.distributed import dist_env
from train.trainer import train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    p.add_argument("--data", help="dataset folder (rtanim prepare / GANimation layout) or .safetensors shard")
    p.add_argument("--out", required=True, help="run folder (config.json, checkpoints, logs)")
    p.add_argument("--arch", choices=ARCH_CHOICES, default=None)
    p.add_argument("--flow", action="store_true", default=None, help="add the flow head")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="per process")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--config", default=None, help="JSON file of settings to start from")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = dist_env()
    try:
        cfg = build_config(args.data, args.out, arch=args.arch, flow=args.flow, steps=args.steps, batch=args.batch,
                           device=args.device, config_file=args.config, sets=args.set, resume=args.resume)
        result = train(cfg, resume=args.resume, progress=env.main and sys.stderr.isatty())
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        saved = (Path(args.out) / "latest.json").is_file()
        print("interrupted (checkpoint saved)" if saved else "interrupted before the first step: nothing saved",
              file=sys.stderr)
        return 130
    if env.main:
        print(f"step {result.step}: {result.images_per_s:.2f} images/s; checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
