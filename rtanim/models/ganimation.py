"""Generator / discriminator definitions and checkpoint I/O (safetensors + JSON metadata).

The generator is GANimation's (Pumarola et al., ECCV 2018), layer for layer, with
the original module names (``main.*``, ``img_reg.*``, ``attetion_reg.*`` - the
typo is the original's), so the authors' checkpoints map onto it key for key.
Its forward returns the tensors of the engine I/O contract, in that order:
``attention`` [N,1,H,W] in [0,1], ``color`` [N,3,H,W] in [-1,1] and, for flow
models, ``flow`` [N,2,H,W] (normalised backward offsets, grid_sample convention).

Checkpoints are safetensors with the :class:`ModelSpec` (and data fingerprint)
as JSON in the header metadata. Nothing is ever unpickled: ``.pth`` files are
read with ``torch.load(weights_only=True)``, which refuses any pickle that
needs code execution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rtanim.errors import InputError
from rtanim.expression.aus import ALL_CODES, AU_CODES, EXTENDED_CODES
from rtanim.models.checkpoint_io import extras, write_checkpoint
from rtanim.models.checkpoint_io import read_metadata as read_safetensors_metadata

log = logging.getLogger("rtanim.models")

Norm = Literal["affine", "plain"]
#: ``affine``: the paper's affine InstanceNorm, convs without bias.
#: ``plain``: ganimation_replicate's InstanceNorm without affine, convs in the trunk with bias.
NORMS: tuple[str, ...] = ("affine", "plain")

CHECKPOINT_FORMAT = "rtanim.generator"
CHECKPOINT_VERSION = "1"


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a generator; stored in every checkpoint and ONNX file."""

    arch: str = "ganimation"  # ganimation | lite | custom (a label; width / n_res decide the shape)
    width: int = 64
    n_res: int = 6
    flow: bool = False
    au_codes: tuple[str, ...] = AU_CODES
    crop_size: int = 128
    norm: Norm = "affine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "au_codes", tuple(self.au_codes))
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {self.norm!r}")
        if self.width < 1 or self.n_res < 0 or self.crop_size % 4:
            raise ValueError(f"bad spec: width={self.width} n_res={self.n_res} crop_size={self.crop_size}")
        unknown = [c for c in self.au_codes if c not in ALL_CODES]
        if unknown or not self.au_codes:
            raise ValueError(f"unknown AU codes {unknown}" if unknown else "empty AU list")

    @property
    def n_aus(self) -> int:
        return len(self.au_codes)

    @property
    def name(self) -> str:
        """Display name: ``lite``, ``ganimation+flow``, ..."""
        return self.arch + ("+flow" if self.flow else "")

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("attention", "color", "flow") if self.flow else ("attention", "color")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Mapping) -> ModelSpec:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if k == "au_codes" else v) for k, v in data.items() if k in known})


#: Built-in architectures (``+flow`` may be appended to any of them).
ARCHS: dict[str, ModelSpec] = {
    "ganimation": ModelSpec("ganimation", width=64, n_res=6),
    "lite": ModelSpec("lite", width=32, n_res=4),
}


def spec_for(name: str, *, flow: bool | None = None, au_codes: Sequence[str] | None = None) -> ModelSpec:
    """The spec of a built-in architecture name (``lite``, ``ganimation+flow``, ...)."""
    base, plus_flow = (name[: -len("+flow")], True) if name.endswith("+flow") else (name, False)
    if base not in ARCHS:
        raise KeyError(name)
    spec = replace(ARCHS[base], flow=plus_flow if flow is None else flow)
    return replace(spec, au_codes=tuple(au_codes)) if au_codes is not None else spec


# --------------------------------------------------------------------------- networks


def _norm(channels: int, norm: Norm) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=norm == "affine", track_running_stats=False)


class ResidualBlock(nn.Module):
    """conv3x3-IN-ReLU-conv3x3-IN plus the skip; ``main.{0,1,3,4}`` as in the original."""

    def __init__(self, dim: int, norm: Norm = "affine") -> None:
        super().__init__()
        bias = norm == "plain"
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=bias),
            _norm(dim, norm),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=bias),
            _norm(dim, norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """GANimation's generator; ``forward(image, aus) -> (attention, color[, flow])``."""

    def __init__(self, spec: ModelSpec = ARCHS["ganimation"]) -> None:
        super().__init__()
        self.spec = spec
        w, norm, bias = spec.width, spec.norm, spec.norm == "plain"
        layers: list[nn.Module] = [
            nn.Conv2d(3 + spec.n_aus, w, 7, 1, 3, bias=bias), _norm(w, norm), nn.ReLU(inplace=True)
        ]
        for mult in (1, 2):  # down-sampling to 2w, 4w
            layers += [nn.Conv2d(w * mult, w * mult * 2, 4, 2, 1, bias=bias), _norm(w * mult * 2, norm),
                       nn.ReLU(inplace=True)]
        layers += [ResidualBlock(w * 4, norm) for _ in range(spec.n_res)]
        for mult in (4, 2):  # up-sampling back to w
            layers += [nn.ConvTranspose2d(w * mult, w * mult // 2, 4, 2, 1, bias=bias), _norm(w * mult // 2, norm),
                       nn.ReLU(inplace=True)]
        self.main = nn.Sequential(*layers)
        self.img_reg = nn.Sequential(nn.Conv2d(w, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.attetion_reg = nn.Sequential(nn.Conv2d(w, 1, 7, 1, 3, bias=False), nn.Sigmoid())
        self.flow_reg = nn.Sequential(nn.Conv2d(w, 2, 7, 1, 3, bias=False), nn.Tanh()) if spec.flow else None
        init_weights(self)

    #: Compute the tiled-AU part of the first conv in closed form and the heads as one conv (same
    #: math, same weights; ~20% fewer operations for ``lite``). False runs the literal layers.
    fast: bool = True

    def forward(self, image: torch.Tensor, aus: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``image`` [N,3,H,W] in [-1,1], ``aus`` [N,K] in [0,1]; AUs are tiled over the image."""
        aus = aus.to(image.dtype)
        if not self.fast:
            tiled = aus[:, :, None, None].expand(-1, -1, image.shape[2], image.shape[3])
            features = self.main(torch.cat([image, tiled], dim=1))
            out = (self.attetion_reg(features), self.img_reg(features))
            return out + (self.flow_reg(features),) if self.flow_reg is not None else out
        features = self.main[1:](self._first_conv(image, aus))
        heads = [self.attetion_reg[0].weight, self.img_reg[0].weight]
        if self.flow_reg is not None:
            heads.append(self.flow_reg[0].weight)
        y = F.conv2d(features, torch.cat(heads), padding=3)
        out = (torch.sigmoid(y[:, :1]), torch.tanh(y[:, 1:4]))
        return out + (torch.tanh(y[:, 4:6]),) if self.flow_reg is not None else out

    def _first_conv(self, image: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        """The 7x7 conv over [image, tiled AUs] without materialising the tiled channels.

        A constant channel convolved with zero padding gives, at (y, x), the sum of the kernel taps
        that land inside the image; tap validity is separable in rows and columns, so the AU part is
        ``Mr @ (sum_k aus_k W_k) @ Mc^T`` with 0/1 masks Mr [H,7], Mc [W,7]: a few small matmuls.
        """
        conv = self.main[0]
        w_img, w_au = conv.weight[:, :3], conv.weight[:, 3:]
        h, w = image.shape[2], image.shape[3]
        y = F.conv2d(image, w_img, conv.bias, padding=3)
        c, k, kh, kw = w_au.shape
        v = (aus @ w_au.permute(1, 0, 2, 3).reshape(k, c * kh * kw)).reshape(-1, c, kh, kw)  # sum_k aus_k W_k
        return y + _tap_mask(h, image) @ v @ _tap_mask(w, image).transpose(0, 1)


def _tap_mask(size: int, like: torch.Tensor, k: int = 7) -> torch.Tensor:
    """[size, k]: 1 where kernel tap j at output position i reads inside the image (padding k//2)."""
    pos = torch.arange(size, device=like.device)[:, None] + torch.arange(k, device=like.device)[None, :] - k // 2
    return ((pos >= 0) & (pos < size)).to(like.dtype)


class Discriminator(nn.Module):
    """GANimation's critic: ``depth`` 4x4 stride-2 convs with LeakyReLU(0.01), then two heads.

    ``conv1`` is the patch critic (3x3 conv -> 1 channel); ``conv2`` regresses the AUs
    with a kernel the size of the final feature map. Key names follow the original.
    """

    def __init__(self, n_aus: int = len(AU_CODES), image_size: int = 128, width: int = 64, depth: int = 6) -> None:
        super().__init__()
        if image_size % (2**depth):
            raise ValueError(f"image_size {image_size} is not divisible by 2**depth ({2**depth})")
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
        dim = width
        for _ in range(1, depth):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(dim, n_aus, image_size // 2**depth, bias=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (critic map [N,1,h,w], AUs [N,K])."""
        h = self.main(image)
        return self.conv1(h), self.conv2(h).flatten(1)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """The original code's init: conv weights N(0, 0.02), zero biases; the flow head starts at zero flow."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    flow = getattr(module, "flow_reg", None)
    if flow is not None:
        nn.init.zeros_(flow[0].weight)


def build_generator(spec: ModelSpec) -> Generator:
    return Generator(spec).eval()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- blending


def identity_grid(n: int, h: int, w: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """grid_sample's base grid [N,H,W,2] (x, y) for ``align_corners=False``."""
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).expand(n, h, w, 2)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``image`` [N,C,H,W] by ``flow`` [N,2,H,W] (x, y offsets in normalised units)."""
    n, _, h, w = image.shape
    grid = identity_grid(n, h, w, device=image.device, dtype=image.dtype) + flow.permute(0, 2, 3, 1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def blend(image: torch.Tensor, attention: torch.Tensor, color: torch.Tensor, flow: torch.Tensor | None = None):
    """GANimation's composite ``A * I + (1 - A) * C``; with flow, ``A * warp(I, F) + (1 - A) * C``."""
    source = image if flow is None else warp(image, flow)
    return attention * source + (1 - attention) * color


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A generator's weights and what they mean."""

    spec: ModelSpec
    state: dict[str, torch.Tensor]
    fingerprint: str = ""  # identifies the training data (or the imported source)
    extra: dict[str, str] = field(default_factory=dict)


def weights_digest(state: Mapping[str, torch.Tensor], spec: ModelSpec | None = None) -> str:
    """A sha256 over spec and weights (FP32 bytes): the model's identity for engine caches."""
    h = hashlib.sha256((spec.to_json() if spec else "").encode())
    for key in sorted(state):
        t = state[key].detach().to("cpu", torch.float32).contiguous()
        h.update(key.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def model_digest(model: Generator) -> str:
    """Recomputed each call (~50 ms for ``ganimation``): a model being trained must never hit a stale engine."""
    return weights_digest(model.state_dict(), model.spec)


def save_checkpoint(
    model: Generator | Checkpoint,
    path: str | Path,
    *,
    precision: Literal["fp32", "fp16"] = "fp32",
    fingerprint: str | None = None,
) -> Path:
    """Write safetensors + metadata, via a temporary name so no half-written file has the final name."""
    if isinstance(model, Checkpoint):
        spec, state, fp, extra = model.spec, model.state, model.fingerprint, dict(model.extra)
    else:
        spec, state, fp, extra = model.spec, model.state_dict(), getattr(model, "fingerprint", ""), {}
    fields = {"version": CHECKPOINT_VERSION, "fingerprint": fingerprint if fingerprint is not None else fp}
    return write_checkpoint(path, state, format=CHECKPOINT_FORMAT, spec=spec.to_json(), precision=precision,
                            fields=fields, extra=extra)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of one of our generator checkpoints (no tensor is read)."""
    meta = read_safetensors_metadata(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, f"not an rtanim generator checkpoint (format={meta.get('format')!r})", field="format")
    return meta


def load_checkpoint(path: str | Path) -> Checkpoint:
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        spec = ModelSpec.from_json(meta["spec"])
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(path, f"bad model spec in metadata ({e})", field="spec") from None
    state = load_file(str(path), device="cpu")
    extra = extras(meta)
    return Checkpoint(spec, state, meta.get("fingerprint", ""), extra)


# --------------------------------------------------------------------------- .pth import

_LEGACY_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def _torch_load_safely(path: Path) -> Mapping:
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            path, f"refusing to load: the pickle needs code execution, which rtanim never runs ({first})"
        ) from None
    except Exception as e:  # truncated zip, wrong file type, ...
        raise InputError(path, f"not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "generator", "G"):  # common wrappers
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "expected a state dict (a mapping of names to tensors)")
    return obj


def _codes_for(k: int, path: Path, au_codes: Sequence[str] | None) -> tuple[str, ...]:
    if au_codes is not None:
        if len(au_codes) != k:
            raise InputError(path, f"the generator takes {k} AUs but {len(au_codes)} AU codes were given", "aus")
        return tuple(au_codes)
    for codes in (AU_CODES, EXTENDED_CODES):
        if len(codes) == k:
            return codes
    raise InputError(path, f"the generator takes {k} AUs; pass the AU list it was trained with", field="aus")


def _arch_label(width: int, n_res: int) -> str:
    return next((n for n, s in ARCHS.items() if (s.width, s.n_res) == (width, n_res)), "custom")


def import_pth(path: str | Path, au_codes: Sequence[str] | None = None) -> Checkpoint:
    """Import an original GANimation (``net_epoch_N_id_G.pth``) or ganimation_replicate
    (``*_net_gen.pth``) generator checkpoint; the layout is detected from the keys.
    """
    path = Path(path)
    raw = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in _torch_load_safely(path).items()}
    raw = {k: v for k, v in raw.items() if not k.endswith(_LEGACY_SUFFIXES)}
    if "main.0.weight" in raw and "attetion_reg.0.weight" in raw:
        state, norm, source = raw, "affine" if "main.1.weight" in raw else "plain", "ganimation"
    elif "model.0.weight" in raw and "au_top.0.weight" in raw:
        state, norm, source = _replicate_to_ours(raw), "plain", "ganimation_replicate"
    else:
        if any(k.startswith(("conv1.", "conv2.", "model.")) for k in raw) and "au_top.0.weight" not in raw:
            raise InputError(path, "this is a discriminator (or unknown) checkpoint; import the generator (..._G.pth)")
        raise InputError(path, "unknown layout: expected GANimation (main.*, img_reg.*, attetion_reg.*) "
                               "or ganimation_replicate (model.*, color_top.*, au_top.*) keys")
    first = state["main.0.weight"]
    width, k = int(first.shape[0]), int(first.shape[1]) - 3
    n_res = len({m.group(1) for key in state if (m := re.match(r"main\.(\d+)\.main\.", key))})
    spec = ModelSpec(_arch_label(width, n_res), width=width, n_res=n_res, flow="flow_reg.0.weight" in state,
                     au_codes=_codes_for(k, path, au_codes), norm=norm)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Checkpoint(spec, dict(state), f"imported:{source}:{path.name}:sha256={digest}", {"source": source})


def _replicate_to_ours(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ganimation_replicate names -> ours: ``model`` -> ``main``, ``conv_block`` -> ``main``,
    ``color_top`` -> ``img_reg``, ``au_top`` -> ``attetion_reg``. With ``--use_dropout`` its residual
    blocks carry a Dropout at index 3, so the second conv sits at 4 instead of 3.
    """
    dropout = any(re.search(r"conv_block\.4\.weight$", k) for k in raw)
    out = {}
    for key, value in raw.items():
        key = re.sub(r"^model\.", "main.", key)
        key = re.sub(r"^color_top\.", "img_reg.", key)
        key = re.sub(r"^au_top\.", "attetion_reg.", key)
        if dropout:
            key = re.sub(r"\.conv_block\.4\.", ".conv_block.3.", key)
        out[key.replace(".conv_block.", ".main.")] = value
    return out


# --------------------------------------------------------------------------- loading

#: Registry names: (shipped asset file, architecture used for random init when it is absent).
REGISTRY: dict[str, tuple[str, str]] = {
    "default": ("default.safetensors", "ganimation"),
    "ganimation": ("ganimation.safetensors", "ganimation"),
    "lite": ("lite.safetensors", "lite"),
    "ganimation+flow": ("ganimation+flow.safetensors", "ganimation+flow"),
    "lite+flow": ("lite+flow.safetensors", "lite+flow"),
}


def shipped_weights(name: str) -> Path | None:
    """The asset file shipped for a registry name, if any (under rtanim/assets/)."""
    asset = resources.files("rtanim") / "assets" / REGISTRY[name][0]
    return Path(str(asset)) if asset.is_file() else None


def model_from_checkpoint(ckpt: Checkpoint, source: str | Path) -> Generator:
    model = Generator(ckpt.spec)
    missing, unexpected = _key_diff(model, ckpt.state)
    if missing or unexpected:
        raise InputError(source, f"weights do not match a {ckpt.spec.name} generator "
                                 f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in ckpt.state.items():
        if tuple(value.shape) != tuple(model.state_dict()[key].shape):
            raise InputError(source, f"{key}: shape {tuple(value.shape)} does not fit the spec", field=key)
    model.load_state_dict(ckpt.state)  # copies, casting FP16 checkpoints to FP32
    model.fingerprint = ckpt.fingerprint
    model.source = str(source)
    return model.eval()


def _key_diff(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    ours = set(model.state_dict())
    return sorted(ours - set(state)), sorted(set(state) - ours)


def load_checkpoint_any(path: str | Path, au_codes: Sequence[str] | None = None) -> Checkpoint:
    """A checkpoint from a ``.safetensors`` (ours) or ``.pth`` (imported) file."""
    p = Path(path)
    if p.suffix in (".pth", ".pt"):
        return import_pth(p, au_codes)
    if p.suffix == ".safetensors":
        return load_checkpoint(p)
    raise InputError(path, "expected a .safetensors checkpoint or a GANimation .pth file", field="--model")


def load_model(
    name_or_path: str | Path = "default",
    *,
    device: str | torch.device = "cpu",
    au_codes: Sequence[str] | None = None,
    seed: int = 0,
) -> Generator:
    """A generator in eval mode from a registry name (shipped weights, else a seeded random init), a
    ``.safetensors`` checkpoint or an original ``.pth`` (imported). ``model.spec`` tells its AU list.
    """
    name = str(name_or_path)
    if name in REGISTRY:
        asset = shipped_weights(name)
        if asset is not None:
            return model_from_checkpoint(load_checkpoint(asset), asset).to(device)
        log.warning("no shipped weights for %r: random initialisation (outputs are meaningless)", name)
        with torch.random.fork_rng(devices=[]):  # reproducible weights without touching the caller's RNG
            torch.manual_seed(seed)
            model = Generator(spec_for(REGISTRY[name][1], au_codes=au_codes)).eval()
        model.fingerprint, model.source = "random-init", name
        return model.to(device)
    path = Path(name)
    if not path.exists():
        choices = ", ".join(REGISTRY)
        raise InputError(name, f"no such file or model name (names: {choices})", field="--model")
    return model_from_checkpoint(load_checkpoint_any(path, au_codes), path).to(device)
