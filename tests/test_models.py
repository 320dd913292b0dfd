"""Generator / discriminator definitions and checkpoint I/O (safetensors, original .pth import)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES, EXTENDED_CODES
from rtanim.models.ganimation import (
    ARCHS,
    Checkpoint,
    Discriminator,
    Generator,
    ModelSpec,
    ResidualBlock,
    blend,
    build_generator,
    count_parameters,
    import_pth,
    load_model,
    read_metadata,
    save_checkpoint,
    spec_for,
    warp,
)

SMALL = ModelSpec("custom", width=8, n_res=2)


def _inputs(n: int = 2, k: int = 17, seed: int = 0, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1, torch.rand(n, k, generator=g)


def _randomise(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial norms / flow head, so equalities below are not vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if p.ndim == 1 and p.shape[0] > 0 else 0.0))
    return model


def _run(model: Generator, image: torch.Tensor, aus: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(image, aus)


# ----------------------------------------------------------------- architecture


def test_ganimation_parameter_count():
    model = build_generator(spec_for("ganimation"))
    assert count_parameters(model) == 8_471_296  # the paper's 8.47 M for 17 AUs
    assert not any(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))
    assert all(m.affine for m in model.modules() if isinstance(m, nn.InstanceNorm2d))


def test_ganimation_layer_by_layer_shapes():
    model = build_generator(spec_for("ganimation"))
    model.fast = False  # the literal layers, one hook per layer
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for layer in model.main:
        layer.register_forward_hook(lambda m, i, o: shapes.append((type(m).__name__, tuple(o.shape[1:]))))
    image, aus = _inputs(1)
    attention, color = _run(model, image, aus)
    conv, norm, relu, res, up = "Conv2d", "InstanceNorm2d", "ReLU", "ResidualBlock", "ConvTranspose2d"
    expected = (
        [(conv, (64, 128, 128)), (norm, (64, 128, 128)), (relu, (64, 128, 128))]
        + [(conv, (128, 64, 64)), (norm, (128, 64, 64)), (relu, (128, 64, 64))]
        + [(conv, (256, 32, 32)), (norm, (256, 32, 32)), (relu, (256, 32, 32))]
        + [(res, (256, 32, 32))] * 6
        + [(up, (128, 64, 64)), (norm, (128, 64, 64)), (relu, (128, 64, 64))]
        + [(up, (64, 128, 128)), (norm, (64, 128, 128)), (relu, (64, 128, 128))]
    )
    assert shapes == expected
    assert model.main[0].in_channels == 3 + 17 and model.main[0].kernel_size == (7, 7)
    assert [m.kernel_size for m in (model.main[3], model.main[6])] == [(4, 4), (4, 4)]
    assert attention.shape == (1, 1, 128, 128) and color.shape == (1, 3, 128, 128)
    assert attention.min() >= 0 and attention.max() <= 1 and color.abs().max() <= 1
    assert isinstance(model.attetion_reg[1], nn.Sigmoid) and isinstance(model.img_reg[1], nn.Tanh)


def test_lite_and_flow_variants():
    lite = build_generator(spec_for("lite+flow"))
    assert lite.main[0].out_channels == 32 and sum(isinstance(m, ResidualBlock) for m in lite.main) == 4
    image, aus = _inputs(1)
    out = _run(lite, image, aus)
    assert [tuple(o.shape) for o in out] == [(1, 1, 128, 128), (1, 3, 128, 128), (1, 2, 128, 128)]
    assert float(out[2].abs().max()) == 0.0  # the flow head starts at zero flow
    assert spec_for("lite").name == "lite" and spec_for("lite", flow=True).name == "lite+flow"


@pytest.mark.parametrize("spec", [SMALL, ModelSpec("custom", 8, 1, flow=True, norm="plain"),
                                  ModelSpec("custom", 8, 1, au_codes=EXTENDED_CODES)])
def test_fast_path_matches_literal_layers(spec):
    """The closed-form AU conv and the fused heads compute the same function as the paper's layers."""
    model = _randomise(build_generator(spec))
    image, aus = _inputs(3, spec.n_aus)
    fast = _run(model, image, aus)
    model.fast = False
    literal = _run(model, image, aus)
    for a, b in zip(fast, literal, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_discriminator_heads_and_depth():
    d = Discriminator(n_aus=17)
    critic, aus = d(torch.zeros(2, 3, 128, 128))
    assert critic.shape == (2, 1, 2, 2) and aus.shape == (2, 17)
    assert [m.negative_slope for m in d.main if isinstance(m, nn.LeakyReLU)] == [0.01] * 6
    assert d.conv2.kernel_size == (2, 2) and d.conv1.kernel_size == (3, 3)
    small = Discriminator(n_aus=len(EXTENDED_CODES), image_size=64, width=16, depth=4)
    critic, aus = small(torch.zeros(1, 3, 64, 64))
    assert critic.shape == (1, 1, 4, 4) and aus.shape == (1, len(EXTENDED_CODES))
    with pytest.raises(ValueError):
        Discriminator(image_size=100)


def test_blend_and_warp():
    image, _ = _inputs(2)
    a = torch.rand(2, 1, 128, 128)
    c = torch.rand(2, 3, 128, 128) * 2 - 1
    zero = torch.zeros(2, 2, 128, 128)
    torch.testing.assert_close(warp(image, zero), image, atol=1e-6, rtol=0)
    torch.testing.assert_close(blend(image, a, c), a * image + (1 - a) * c)
    torch.testing.assert_close(blend(image, a, c, zero), blend(image, a, c), atol=1e-6, rtol=0)
    shift = torch.zeros(1, 2, 128, 128)
    shift[:, 0] = 2.0 / 128  # one pixel in x: output(x) samples input(x + 1)
    moved = warp(image[:1], shift)
    torch.testing.assert_close(moved[..., :-1], image[:1, ..., 1:], atol=1e-5, rtol=0)


# ----------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_safetensors_round_trip(tmp_path, precision):
    model = _randomise(build_generator(replace_flow(SMALL)))
    path = save_checkpoint(model, tmp_path / "g.safetensors", precision=precision, fingerprint="celeba:abc")
    meta = read_metadata(path)
    assert json.loads(meta["spec"])["width"] == 8 and meta["fingerprint"] == "celeba:abc"
    assert meta["precision"] == precision
    loaded = load_model(path)
    assert loaded.spec == model.spec and loaded.fingerprint == "celeba:abc"
    image, aus = _inputs(2)
    for a, b in zip(_run(model, image, aus), _run(loaded, image, aus), strict=True):
        torch.testing.assert_close(a, b, atol=0 if precision == "fp32" else 5e-3, rtol=0 if precision == "fp32" else 0)
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def replace_flow(spec: ModelSpec) -> ModelSpec:
    return ModelSpec(spec.arch, spec.width, spec.n_res, True, spec.au_codes, spec.crop_size, spec.norm)


def test_extended_au_checkpoint_loads(tmp_path):
    model = build_generator(ModelSpec("custom", 8, 1, au_codes=EXTENDED_CODES))
    loaded = load_model(save_checkpoint(model, tmp_path / "ext.safetensors"))
    assert loaded.spec.au_codes == EXTENDED_CODES and loaded.main[0].in_channels == 3 + len(EXTENDED_CODES)


def test_bad_checkpoints_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="model name"):
        load_model("no-such-model")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError):
        load_model(junk)
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(other))
    with pytest.raises(InputError, match="not an rtanim generator"):
        load_model(other)


def _original_layout(model: Generator) -> dict[str, torch.Tensor]:
    """The state dict as the authors' code saves it from a DataParallel model under PyTorch 0.3/0.4:
    ``module.`` prefix and InstanceNorm running statistics."""
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, nn.InstanceNorm2d):
            state[f"module.{name}.running_mean"] = torch.zeros(m.num_features)
            state[f"module.{name}.running_var"] = torch.ones(m.num_features)
            state[f"module.{name}.num_batches_tracked"] = torch.tensor(0)
    return state


def test_import_original_ganimation_checkpoint(tmp_path):
    model = _randomise(build_generator(ModelSpec("ganimation", width=16, n_res=2)))
    path = tmp_path / "net_epoch_30_id_G.pth"
    torch.save(_original_layout(model), path)
    imported = load_model(path)
    assert imported.spec.width == 16 and imported.spec.n_res == 2 and imported.spec.au_codes == AU_CODES
    assert imported.spec.norm == "affine" and imported.fingerprint.startswith("imported:ganimation:")
    image, aus = _inputs(2)
    for a, b in zip(_run(model, image, aus), _run(imported, image, aus), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_import_full_size_original_keys(tmp_path):
    """A 17-AU paper-size generator imports as ``ganimation`` (keys only: no forward, it is slow on CI)."""
    model = build_generator(spec_for("ganimation"))
    path = tmp_path / "net_epoch_1_id_G.pth"
    torch.save(_original_layout(model), path)
    ckpt = import_pth(path)
    assert ckpt.spec == ARCHS["ganimation"]
    assert set(ckpt.state) == set(model.state_dict())


def _pwned(marker: str) -> None:
    Path(marker).write_text("code ran")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_pwned, (self.marker,))


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "net_epoch_1_id_G.pth"
    torch.save({"main.0.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    with pytest.raises(InputError, match="code execution") as err:
        load_model(path)
    assert not marker.exists()
    assert str(path) in err.value.line() and "\n" not in err.value.line()


class _ReplicaBlock(nn.Module):
    """ganimation_replicate's ResnetBlock (zero padding, optional dropout), rebuilt from its source."""

    def __init__(self, dim: int, dropout: bool) -> None:
        super().__init__()
        layers = [nn.Conv2d(dim, dim, 3, padding=1, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True)]
        layers += [nn.Dropout(0.5)] if dropout else []
        layers += [nn.Conv2d(dim, dim, 3, padding=1, bias=True), nn.InstanceNorm2d(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class _ReplicaGenerator(nn.Module):
    """ganimation_replicate's SplitGenerator layout: model.*, color_top.*, au_top.*; non-affine IN, biased convs."""

    def __init__(self, ngf: int, n_aus: int, n_blocks: int, dropout: bool) -> None:
        super().__init__()
        m: list[nn.Module] = [nn.Conv2d(3 + n_aus, ngf, 7, 1, 3, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            m += [nn.Conv2d(ngf * mult, ngf * mult * 2, 4, 2, 1, bias=True), nn.InstanceNorm2d(ngf * mult * 2),
                  nn.ReLU(True)]
        m += [_ReplicaBlock(ngf * 4, dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            m += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=True),
                  nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        self.model = nn.Sequential(*m)
        self.color_top = nn.Sequential(nn.Conv2d(ngf, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.au_top = nn.Sequential(nn.Conv2d(ngf, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, img, au):
        tiled = au[:, :, None, None].expand(-1, -1, img.shape[2], img.shape[3])
        features = self.model(torch.cat([img, tiled], 1))
        return self.color_top(features), self.au_top(features)


@pytest.mark.parametrize("dropout", [False, True])
def test_import_ganimation_replicate_checkpoint(tmp_path, dropout):
    replica = _randomise(_ReplicaGenerator(8, 17, 2, dropout)).eval()
    path = tmp_path / "30_net_gen.pth"
    torch.save(replica.state_dict(), path)
    imported = load_model(path)
    assert imported.spec.norm == "plain" and imported.spec.width == 8 and imported.spec.n_res == 2
    image, aus = _inputs(2)
    with torch.no_grad():
        color, attention = replica(image, aus)
    imported.fast = False  # layer for layer, as the replica computes it (the fast path is tested above)
    ours = _run(imported, image, aus)
    torch.testing.assert_close(ours[0], attention, atol=0, rtol=0)
    torch.testing.assert_close(ours[1], color, atol=0, rtol=0)


def test_import_rejects_unknown_layouts(tmp_path):
    path = tmp_path / "d.pth"
    torch.save({"main.0.weight": torch.zeros(4, 3, 4, 4), "conv1.weight": torch.zeros(1, 4, 3, 3)}, path)
    with pytest.raises(InputError, match="layout|discriminator"):
        import_pth(path)
    odd = tmp_path / "odd_G.pth"
    model = build_generator(ModelSpec("custom", 8, 1, au_codes=("AU01", "AU02", "AU04")))
    torch.save(model.state_dict(), odd)
    with pytest.raises(InputError, match="3 AUs"):
        import_pth(odd)
    assert import_pth(odd, au_codes=("AU01", "AU02", "AU04")).spec.n_aus == 3


def test_checkpoint_dataclass_saves_imported_weights(tmp_path):
    model = _randomise(build_generator(SMALL))
    ckpt = Checkpoint(model.spec, model.state_dict(), "imported:x", {"source": "ganimation"})
    path = save_checkpoint(ckpt, tmp_path / "c.safetensors", precision="fp16")
    assert read_metadata(path)["extra.source"] == "ganimation"
    assert load_model(path).state_dict()["main.0.weight"].dtype == torch.float32
