"""State-dict layouts of the backbones against the insightface / face.evoLVe layouts written out here,
and forward passes checked against slow functional re-implementations that read the state_dict."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from cdface.models import create_model, infer_arch_from_state_dict, infer_model_config, list_models
from cdface.models.ir import IRBackbone

BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

IRESNET_KEY_PATTERNS = [
    r"conv1\.weight",
    rf"bn1\.{BN}",
    r"prelu\.weight",
    rf"layer[1-4]\.\d+\.(bn1|bn2|bn3)\.{BN}",
    r"layer[1-4]\.\d+\.(conv1|conv2)\.weight",
    r"layer[1-4]\.\d+\.prelu\.weight",
    r"layer[1-4]\.0\.downsample\.0\.weight",
    rf"layer[1-4]\.0\.downsample\.1\.{BN}",
    rf"bn2\.{BN}",
    r"fc\.(weight|bias)",
    rf"features\.{BN}",
]
IR_KEY_PATTERNS = [
    r"input_layer\.0\.weight",
    rf"input_layer\.1\.{BN}",
    r"input_layer\.2\.weight",
    rf"body\.\d+\.res_layer\.(0|4)\.{BN}",
    r"body\.\d+\.res_layer\.(1|3)\.weight",
    r"body\.\d+\.res_layer\.2\.weight",
    r"body\.\d+\.shortcut_layer\.0\.weight",
    rf"body\.\d+\.shortcut_layer\.1\.{BN}",
    rf"output_layer\.0\.{BN}",
    r"output_layer\.3\.(weight|bias)",
    r"output_layer\.4\.(running_mean|running_var|num_batches_tracked)",
]
IR_SE_EXTRA = [r"body\.\d+\.res_layer\.5\.(fc1|fc2)\.weight"]


def _meta_state(name: str, **kw) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return create_model(name, **kw).state_dict()


def _assert_keys_match(state: dict, patterns: list[str]) -> None:
    compiled = [re.compile(p + "$") for p in patterns]
    unmatched = [k for k in state if not any(c.match(k) for c in compiled)]
    assert not unmatched, unmatched[:5]
    for c in compiled:  # every pattern is used: nothing of the layout is missing
        assert any(c.match(k) for k in state), c.pattern


@pytest.mark.parametrize("name,layers", [("iresnet50", (3, 4, 14, 3)), ("iresnet100", (3, 13, 30, 3))])
def test_iresnet_layout(name: str, layers: tuple[int, ...]) -> None:
    state = _meta_state(name)
    _assert_keys_match(state, IRESNET_KEY_PATTERNS)
    for stage, count in enumerate(layers, start=1):
        indices = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.")}
        assert indices == set(range(count))
        width = 64 * 2 ** (stage - 1)
        assert state[f"layer{stage}.0.conv2.weight"].shape == (width, width, 3, 3)
        in_width = width // 2 if stage > 1 else 64
        assert state[f"layer{stage}.0.downsample.0.weight"].shape == (width, in_width, 1, 1)
        assert f"layer{stage}.1.downsample.0.weight" not in state
    assert state["fc.weight"].shape == (512, 512 * 7 * 7)
    assert state["features.weight"].shape == (512,)
    assert state["bn2.weight"].shape == (512,)


def test_iresnet100_parameter_count_is_insightfaces() -> None:
    with torch.device("meta"):
        model = create_model("iresnet100")
    assert sum(p.numel() for p in model.parameters()) == 65_156_160
    assert not model.features.weight.requires_grad
    assert model.features.eps == 1e-5 and model.layer1[0].bn1.eps == 1e-5


@pytest.mark.parametrize("name,se", [("ir50", False), ("ir_se50", True)])
def test_ir_layout(name: str, se: bool) -> None:
    state = _meta_state(name)
    _assert_keys_match(state, IR_KEY_PATTERNS + (IR_SE_EXTRA if se else []))
    depths = [state[f"body.{i}.res_layer.1.weight"].shape[0] for i in range(24)]
    assert depths == [64] * 3 + [128] * 4 + [256] * 14 + [512] * 3
    assert "body.24.res_layer.1.weight" not in state
    # stage 1 keeps 64 channels: its shortcut is a (parameter-free) max-pool; later stages project.
    assert "body.0.shortcut_layer.0.weight" not in state
    assert state["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)
    assert "output_layer.4.weight" not in state  # the paper's BatchNorm1d(affine=False)
    if se:
        assert state["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)
        assert state["body.23.res_layer.5.fc2.weight"].shape == (512, 32, 1, 1)


@pytest.mark.parametrize("size,fc_in", [(112, 512 * 7 * 7), (224, 512 * 14 * 14)])
def test_ir_input_sizes(size: int, fc_in: int) -> None:
    with torch.device("meta"):
        model = create_model("ir100", embedding_size=256, input_size=size, output_affine=True).eval()
        out = model(torch.empty(3, 3, size, size))
    assert model.output_layer[3].weight.shape == (256, fc_in)
    assert model.output_layer[4].weight.shape == (256,)
    assert out.shape == (3, 256)
    assert model.input_cfg["input_size"] == (size, size)


def test_mobilefacenet_layout() -> None:
    state = _meta_state("mobilefacenet")
    assert state["layers.0.layers.0.weight"].shape == (128, 3, 3, 3)
    assert state["layers.1.layers.0.weight"].shape == (128, 2, 3, 3)  # groups=64 as insightface
    assert state["layers.2.layers.1.layers.0.weight"].shape == (128, 1, 3, 3)  # depthwise, stride 2
    for layer, count in ((3, 4), (5, 6), (7, 2)):
        indices = {int(k.split(".")[3]) for k in state if k.startswith(f"layers.{layer}.layers.")}
        assert indices == set(range(count))
    assert state["conv_sep.layers.0.weight"].shape == (512, 256, 1, 1)
    assert state["features.layers.0.layers.0.weight"].shape == (512, 1, 7, 7)
    assert state["features.layers.2.weight"].shape == (512, 512)
    assert "features.layers.2.bias" not in state
    assert state["features.layers.3.weight"].shape == (512,)


# Names whose state_dict layout equals another's (they differ only in training-only settings): the keys
# recognise the plain name, which embeds the same.
LAYOUT_TWINS = {"vit_t_dp005_mask0": "vit_t", "vit_s_dp005_mask_0": "vit_s", "vit_b_dp005_mask_005": "vit_b",
                # MagFace's IResNet differs from insightface's only in BN eps and input contract, neither of
                # which is in a state_dict: a bare one reads as IResNet (its release container is recognised)
                **{f"magface_iresnet{d}": f"iresnet{d}" for d in (18, 34, 50, 100)}}
DEFAULT_CFG = {"input_size": (112, 112), "mean": (0.5,) * 3, "std": (0.5,) * 3, "color": "RGB"}
# the models whose releases take another input than the project default (their READMEs / inference code)
RELEASE_CFGS = {
    **{name: {**DEFAULT_CFG, "color": "BGR"} for name in list_models() if name.startswith("adaface_")},
    **{f"magface_iresnet{d}": {**DEFAULT_CFG, "mean": (0.0,) * 3, "std": (1.0,) * 3, "color": "BGR"}
       for d in (18, 34, 50, 100)},
    "inception_resnet_v1": {"input_size": (160, 160), "mean": (127.5 / 255,) * 3, "std": (128 / 255,) * 3,
                            "color": "RGB"},
}


@pytest.mark.parametrize("name", list_models())
def test_every_model_embedding_shape_and_arch_round_trip(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, embedding_size=128).eval()
        h, w = model.input_cfg["input_size"]
        out = model(torch.empty(2, 3, h, w))
    assert out.shape == (2, 128)
    assert model.input_cfg == RELEASE_CFGS.get(name, DEFAULT_CFG)
    state = model.state_dict()
    assert infer_arch_from_state_dict(state) == LAYOUT_TWINS.get(name, name)
    config = infer_model_config({f"module.{k}": v for k, v in state.items()})
    assert config is not None and config["arch"] == LAYOUT_TWINS.get(name, name)
    assert config["embedding_size"] == 128


# ---- functional references: the same networks written as plain calls on the state_dict ----

def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Give every BN non-trivial statistics and affine terms so that the eval-mode maths is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            elif key.endswith(("running_mean", "bias")):
                value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
            elif value.dim() == 1:  # BN weight or PReLU slope
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            else:
                fan_in = value[0].numel()
                value.copy_(torch.randn(value.shape, generator=gen) / fan_in**0.5)


def _bn(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd.get(f"{prefix}.weight"), sd.get(f"{prefix}.bias"), False, 0.0, 1e-5)


def _reference_iresnet(sd: dict, x: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
    x = F.prelu(_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], padding=1)), sd["prelu.weight"])
    for stage, count in enumerate(layers, start=1):
        for b in range(count):
            p = f"layer{stage}.{b}"
            stride = 2 if b == 0 else 1
            out = F.conv2d(_bn(sd, f"{p}.bn1", x), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bn(sd, f"{p}.bn2", out), sd[f"{p}.prelu.weight"])
            out = _bn(sd, f"{p}.bn3", F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1))
            if b == 0:
                x = _bn(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2))
            x = out + x
    x = _bn(sd, "bn2", x).flatten(1)
    return _bn(sd, "features", F.linear(x, sd["fc.weight"], sd["fc.bias"]))


def _reference_ir(sd: dict, x: torch.Tensor, stages: tuple[int, ...], se: bool) -> torch.Tensor:
    x = F.prelu(_bn(sd, "input_layer.1", F.conv2d(x, sd["input_layer.0.weight"], padding=1)),
                sd["input_layer.2.weight"])
    i = 0
    for count in stages:
        for b in range(count):
            p = f"body.{i}.res_layer"
            stride = 2 if b == 0 else 1
            out = F.conv2d(_bn(sd, f"{p}.0", x), sd[f"{p}.1.weight"], padding=1)
            out = F.conv2d(F.prelu(out, sd[f"{p}.2.weight"]), sd[f"{p}.3.weight"], stride=stride, padding=1)
            out = _bn(sd, f"{p}.4", out)
            if se:
                gate = out.mean(dim=(2, 3), keepdim=True)
                gate = F.conv2d(F.relu(F.conv2d(gate, sd[f"{p}.5.fc1.weight"])), sd[f"{p}.5.fc2.weight"])
                out = out * torch.sigmoid(gate)
            if f"body.{i}.shortcut_layer.0.weight" in sd:
                short = F.conv2d(x, sd[f"body.{i}.shortcut_layer.0.weight"], stride=stride)
                short = _bn(sd, f"body.{i}.shortcut_layer.1", short)
            else:
                short = x[:, :, ::stride, ::stride]
            x = out + short
            i += 1
    x = _bn(sd, "output_layer.0", x).flatten(1)
    return _bn(sd, "output_layer.4", F.linear(x, sd["output_layer.3.weight"], sd["output_layer.3.bias"]))


def _assert_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_iresnet18_matches_functional_reference() -> None:
    torch.manual_seed(0)
    model = create_model("iresnet18", embedding_size=64).eval()
    _randomise(model, seed=1)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        _assert_close(model(x), _reference_iresnet(model.state_dict(), x, (2, 2, 2, 2)))


@pytest.mark.parametrize("mode", ["ir", "ir_se"])
def test_ir18_matches_functional_reference(mode: str) -> None:
    torch.manual_seed(0)
    model = IRBackbone(18, mode, embedding_size=64).eval()
    _randomise(model, seed=2)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        _assert_close(model(x), _reference_ir(model.state_dict(), x, (2, 2, 2, 2), se=mode == "ir_se"))
