"""Other projects' release layouts (AdaFace .ckpt, MagFace, facenet-pytorch, CVLface .safetensors) load through
the public loader with no --arch and no preprocessing flags, with the release's input contract, and embed as our
module built directly does; old and odd files (no num_batches_tracked, TorchScript, unknown keys).

Each test writes a tiny instance in the release's key names and container (random weights), as the release does.
Parity with the releasing projects' own module code was checked once outside the repository (see docs/inference.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cdface.errors import FormatError, UnsafeFileError
from cdface.inference.loading import load_embedding_model
from cdface.models import create_model, load_state_dict_strict
from cdface.models.known import KNOWN_MODELS, KnownModel, identify_known

TINY = (8, 16, 32, 64)


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms, so that eval-mode maths and eps are exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            elif key.endswith(("running_mean", "bias")):
                value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
            elif key.endswith(("res_layer.5.weight", "bn3.weight")):  # a residual branch's last BN: small,
                value.copy_(torch.rand(value.shape, generator=gen) * 0.1 + 0.05)  # so deep sums stay finite
            elif value.dim() == 1:
                value.copy_(torch.rand(value.shape, generator=gen) * 0.5 + 0.25)
            else:
                value.copy_(torch.randn(value.shape, generator=gen) / value[0].numel() ** 0.5)
    return model.eval()


def _images(size: int, n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float()


def _close(ours: np.ndarray, ref: torch.Tensor) -> None:
    torch.testing.assert_close(torch.from_numpy(ours), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def _not_close(ours: np.ndarray, ref: torch.Tensor) -> bool:
    return not torch.allclose(torch.from_numpy(ours), ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


# ---------------------------------------------------------------------------------------------- AdaFace


@pytest.mark.parametrize("arch", ["adaface_ir18", "adaface_ir_se50"])
def test_adaface_ckpt_loads_without_flags_with_bgr_contract(arch: str, tmp_path: Path) -> None:
    direct = _randomise(create_model(arch, widths=TINY if "se" not in arch else (16, 32, 64, 128)), 1)
    state = {f"model.{k}": v for k, v in direct.state_dict().items()}
    state.update({"head.kernel": torch.randn(512, 10572), "head.t": torch.zeros(1),
                  "head.batch_mean": torch.ones(1), "head.batch_std": torch.ones(1)})
    path = tmp_path / "adaface.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10}, path)

    loaded = load_embedding_model(path, device="cpu")
    assert loaded.arch == arch
    assert loaded.input_cfg["color"] == "BGR"
    assert loaded.input_cfg["mean"] == (0.5, 0.5, 0.5) and loaded.input_cfg["std"] == (0.5, 0.5, 0.5)
    images = _images(112)
    with torch.no_grad():
        bgr = direct((_nchw(images).flip(1) / 255 - 0.5) / 0.5)  # AdaFace's to_input: RGB -> BGR, (x/255-.5)/.5
        rgb = direct((_nchw(images) / 255 - 0.5) / 0.5)
    out = loaded(images)
    _close(out, bgr)
    assert _not_close(out, rgb)  # the contract matters: RGB input would embed differently


def _fake_lightning(monkeypatch: pytest.MonkeyPatch) -> tuple[type, type]:
    """Stand-ins for the pytorch_lightning classes a Lightning `.ckpt` pickles by name (not installed here)."""
    import types

    class ModelCheckpoint:
        pass

    class AttributeDict(dict):
        pass

    for cls, module_name in [(ModelCheckpoint, "pytorch_lightning.callbacks.model_checkpoint"),
                             (AttributeDict, "pytorch_lightning.utilities.parsing")]:
        cls.__module__, cls.__qualname__ = module_name, cls.__name__
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.utilities"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for name, attr, value in [("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", ModelCheckpoint),
                              ("pytorch_lightning.utilities.parsing", "AttributeDict", AttributeDict)]:
        module = types.ModuleType(name)
        setattr(module, attr, value)
        monkeypatch.setitem(sys.modules, name, module)
    return ModelCheckpoint, AttributeDict


def test_lightning_ckpt_with_framework_objects_loads_and_nothing_else_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = _randomise(create_model("adaface_ir18", widths=TINY), 7)
    state = {f"model.{k}": v for k, v in direct.state_dict().items()}
    state["head.kernel"] = torch.randn(512, 10)
    checkpoint_cls, attribute_dict = _fake_lightning(monkeypatch)
    ckpt = {"state_dict": state, "epoch": 1, "pytorch-lightning_version": "1.4.4",
            "callbacks": {checkpoint_cls: {"best_model_score": torch.tensor(0.5)}},  # Lightning < 1.5 keys
            "hyper_parameters": attribute_dict(arch="ir_50", lr=0.1), "hparams_name": "kwargs",
            "args": argparse.Namespace(batch_size=512)}
    path = tmp_path / "adaface_ir18_lightning.ckpt"
    torch.save(ckpt, path)
    torch.save({**ckpt, "evil": os.getcwd}, tmp_path / "mixed.ckpt")  # a global no framework checkpoint holds
    monkeypatch.delitem(sys.modules, "pytorch_lightning.callbacks.model_checkpoint")
    monkeypatch.delitem(sys.modules, "pytorch_lightning.utilities.parsing")

    loaded = load_embedding_model(path, device="cpu")  # the framework objects are inert stand-ins
    images = _images(112)
    with torch.no_grad():
        ref = direct((_nchw(images).flip(1) / 255 - 0.5) / 0.5)
    _close(loaded(images), ref)
    with pytest.raises(UnsafeFileError, match="mixed.ckpt.*refused"):
        load_embedding_model(tmp_path / "mixed.ckpt", device="cpu")


def test_bare_adaface_layout_assumes_bgr_and_says_so_and_a_card_overrides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ir18.pth"
    torch.save(create_model("adaface_ir18", widths=TINY).state_dict(), path)  # TFace saves this layout bare
    with caplog.at_level("WARNING", logger="cdface.inference"):
        assert load_embedding_model(path, device="cpu").input_cfg["color"] == "BGR"
    assert "TFace" in caplog.text and '"color": "RGB"' in caplog.text
    path.with_suffix(".json").write_text('{"color": "RGB"}')
    caplog.clear()
    with caplog.at_level("WARNING", logger="cdface.inference"):
        assert load_embedding_model(path, device="cpu").input_cfg["color"] == "RGB"
    assert "TFace" not in caplog.text


def test_adaface_block_has_the_extra_batchnorm_and_se_block_keys() -> None:
    with torch.device("meta"):
        state = create_model("adaface_ir_se50").state_dict()
    assert "body.0.res_layer.2.running_mean" in state  # BN after the first conv (face.evoLVe has a PReLU there)
    assert "body.0.res_layer.3.weight" in state and state["body.0.res_layer.3.weight"].shape == (64,)  # PReLU
    assert "body.0.res_layer.5.running_var" in state
    assert "body.0.res_layer.se_block.fc1.weight" in state
    assert "output_layer.4.weight" not in state  # the output BatchNorm1d has no affine terms


# ---------------------------------------------------------------------------------------------- MagFace


def test_a_release_loaded_with_a_twin_arch_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MagFace's README names its network iresnet18; --arch iresnet18 loads the same keys into insightface's
    IResNet (eps 1e-5, RGB [-1, 1]) and embeds differently: that must not pass silently."""
    state = {f"features.module.{k}": v for k, v in create_model("magface_iresnet18").state_dict().items()}
    state["fc.weight"] = torch.zeros(512, 10)
    path = tmp_path / "magface.pth"
    torch.save({"state_dict": state}, path)
    with caplog.at_level("WARNING", logger="cdface.inference"):
        load_embedding_model(path, device="cpu", arch="iresnet18")
    assert "a magface release, whose network is magface_iresnet18; --arch iresnet18" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cdface.inference"):
        load_embedding_model(path, device="cpu", arch="magface_iresnet18")
    assert "--arch" not in caplog.text


@pytest.mark.parametrize("prefix", ["features.module.", "module.features."])
def test_magface_checkpoint_loads_with_its_eps_and_contract(prefix: str, tmp_path: Path) -> None:
    direct = _randomise(create_model("magface_iresnet18", widths=TINY), 2)
    state = {prefix + k: v for k, v in direct.state_dict().items()}
    state[("module." if prefix.startswith("module.") else "") + "fc.weight"] = torch.randn(512, 100)  # MagLinear
    path = tmp_path / "magface_epoch_00025.pth"
    torch.save({"epoch": 25, "arch": "iresnet18", "state_dict": state}, path)

    loaded = load_embedding_model(path, device="cpu")
    assert loaded.arch == "magface_iresnet18"
    assert {m.eps for m in loaded.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)} == {2e-5}
    assert loaded.input_cfg == {"input_size": (112, 112), "mean": (0.0,) * 3, "std": (1.0,) * 3, "color": "BGR"}
    images = _images(112)
    with torch.no_grad():
        ref = direct(_nchw(images).flip(1) / 255)  # gen_feat.py: cv2 (BGR), ToTensor, Normalize(0, 1)
        eps_1e5 = create_model("iresnet18", embedding_size=512).eval()
    _close(loaded(images), ref)
    assert eps_1e5.bn1.eps == 1e-5  # insightface's own IResNet keeps its eps


# ------------------------------------------------------------------------------------------ facenet-pytorch


def test_facenet_pytorch_state_dict_loads_at_160_with_its_standardisation(tmp_path: Path) -> None:
    direct = _randomise(create_model("inception_resnet_v1", repeats=(1, 2, 1), channel_divisor=8), 3)
    state = dict(direct.state_dict())
    state["logits.weight"], state["logits.bias"] = torch.randn(8631, 512), torch.zeros(8631)  # VGGFace2 head
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(state, path)

    loaded = load_embedding_model(path, device="cpu")
    assert loaded.arch == "inception_resnet_v1"
    assert loaded.input_cfg["input_size"] == (160, 160) and loaded.input_cfg["color"] == "RGB"
    images = _images(160)
    with torch.no_grad():
        ref = direct((_nchw(images) - 127.5) / 128.0)  # facenet-pytorch's fixed_image_standardization
    _close(loaded(images), ref)


def test_facenet_tiny_and_released_shapes() -> None:
    with torch.device("meta"):
        full = create_model("inception_resnet_v1")
    assert sum(p.numel() for p in full.parameters()) == 23_482_624  # facenet-pytorch's model without logits
    assert full.last_linear.weight.shape == (512, 1792) and full.last_bn.eps == 1e-3


# ------------------------------------------------------------------------------------------ safetensors


def test_cvlface_safetensors_loads_as_rgb_adaface_ir(tmp_path: Path) -> None:
    direct = _randomise(create_model("adaface_ir18", widths=TINY), 4)
    path = tmp_path / "model.safetensors"
    save_file({f"net.{k}": v.contiguous() for k, v in direct.state_dict().items()}, str(path),
              metadata={"format": "pt"})
    loaded = load_embedding_model(path, device="cpu")
    assert loaded.arch == "adaface_ir18" and loaded.input_cfg["color"] == "RGB"
    images = _images(112)
    with torch.no_grad():
        ref = direct((_nchw(images) / 255 - 0.5) / 0.5)  # CVLface's test transform on RGB
    _close(loaded(images), ref)


def test_plain_safetensors_of_a_known_layout_loads(tmp_path: Path) -> None:
    direct = _randomise(create_model("iresnet_tiny", embedding_size=16), 5)
    path = tmp_path / "weights.bin"  # recognised by its header, not its name
    save_file({k: v.contiguous() for k, v in direct.state_dict().items()}, str(path))
    loaded = load_embedding_model(path, device="cpu")
    images = _images(112)
    with torch.no_grad():
        ref = direct((_nchw(images) / 255 - 0.5) / 0.5)
    assert loaded.arch == "iresnet_tiny"
    _close(loaded(images), ref)


def test_damaged_safetensors_is_one_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(FormatError, match="bad.safetensors.*safetensors"):
        load_embedding_model(path, device="cpu")



def test_a_torch_file_named_safetensors_loads_with_torch(tmp_path: Path) -> None:
    """A `.pt` renamed to `.safetensors` (or saved under that name by a script) is a torch zip: it was refused as
    "a damaged safetensors file"; it is read by its header, like a safetensors file under a `.bin` name."""
    direct = _randomise(create_model("iresnet_tiny"), 11)
    path = tmp_path / "renamed.safetensors"
    torch.save(direct.state_dict(), path)
    images = _images(112)
    with torch.no_grad():
        ref = direct((_nchw(images) / 255 - 0.5) / 0.5)
    _close(load_embedding_model(path, device="cpu", arch="iresnet_tiny")(images), ref)


# ---------------------------------------------------------------------------------------------- TransFace


def test_transface_model_pt_keeps_its_patch_gate(tmp_path: Path) -> None:
    direct = _randomise(create_model("transface_tiny", embedding_size=16), 8)
    path = tmp_path / "model.pt"
    torch.save(direct.state_dict(), path)  # TransFace saves the backbone's plain state_dict
    loaded = load_embedding_model(path, device="cpu")
    assert loaded.arch == "transface_tiny" and loaded.input_cfg["color"] == "RGB"
    images = _images(112)
    x = (_nchw(images) / 255 - 0.5) / 0.5  # TransFace eval_ijbc.py: RGB, (x/255 - 0.5)/0.5
    with torch.no_grad():
        ref = direct(x)
        ungated = direct.feature(direct.forward_features(x))  # what an insightface ViT would compute
    _close(loaded(images), ref)
    assert _not_close(loaded(images), ungated)


# ------------------------------------------------------------------------------------------ known models


def test_known_release_is_narrowed_by_head_classes_and_its_card_applied(tmp_path: Path) -> None:
    ms1mv2 = identify_known("adaface", "adaface_ir50", 512, 85742)
    assert [m.name for m in ms1mv2] == ["adaface_ir50_ms1mv2"]
    assert {m.training_set for m in identify_known("adaface", "adaface_ir50", 512, None)} == {
        "CASIA-WebFace", "WebFace4M", "MS1MV2"}
    facenet = identify_known("facenet-pytorch", "inception_resnet_v1", 512, 10575)
    assert [m.training_set for m in facenet] == ["CASIA-WebFace"]


def test_published_sha256_names_the_exact_file(tmp_path: Path) -> None:
    calls: list[int] = []

    def digest() -> str:
        calls.append(1)
        return "ab" * 32

    entry = KNOWN_MODELS[0]
    table = (KnownModel(**{**entry.__dict__, "name": "with_digest", "sha256": "ab" * 32}), entry)
    assert [m.name for m in identify_known(entry.layout, entry.arch, 512, None, digest, table)] == ["with_digest"]
    assert identify_known(entry.layout, entry.arch, 512, None, digest, (entry,)) == [entry]
    assert len(calls) == 1  # hashed only when a candidate publishes a digest


def test_known_release_is_named_in_describe_and_flags_still_win(tmp_path: Path) -> None:
    direct = create_model("adaface_ir18")  # released widths: a known release's shapes
    state = {f"model.{k}": v for k, v in direct.state_dict().items()}
    state["head.kernel"] = torch.zeros(512, 8631)
    path = tmp_path / "adaface_ir18_vgg2.ckpt"
    torch.save({"state_dict": state}, path)
    loaded = load_embedding_model(path, device="cpu")
    assert loaded.describe()["release"].startswith("known release adaface_ir18_vggface2")
    assert loaded.input_cfg["color"] == "BGR"
    flagged = load_embedding_model(path, device="cpu", bgr=False)  # flags still win over the card
    assert flagged.input_cfg["color"] == "RGB"


def test_models_known_command(capsys: pytest.CaptureFixture[str]) -> None:
    from cdface.cli import main

    assert main(["models", "known"]) == 0
    out = capsys.readouterr().out
    for entry in KNOWN_MODELS:
        assert entry.name in out
    assert "BGR" in out and "github.com/mk-minchul/AdaFace" in out
    assert main(["models", "known", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {m.name for m in KNOWN_MODELS}
    assert all(r["source"].startswith("https://") and r["accuracy"] for r in rows)


# ------------------------------------------------------------------------------------------ old and odd files


def test_state_dict_without_num_batches_tracked_loads_as_torch_would(tmp_path: Path) -> None:
    source = _randomise(create_model("iresnet_tiny", embedding_size=16), 6)
    old = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.nn.Module.load_state_dict(create_model("iresnet_tiny", embedding_size=16), old, strict=True)  # torch: ok
    model = load_state_dict_strict(create_model("iresnet_tiny", embedding_size=16), old, "old.pth")
    torch.testing.assert_close(model.state_dict()["bn1.running_var"], source.state_dict()["bn1.running_var"])
    path = tmp_path / "old.pth"
    torch.save(old, path)
    assert load_embedding_model(path, device="cpu").arch == "iresnet_tiny"


def test_torchscript_archive_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(create_model("iresnet_tiny", embedding_size=16).eval()).save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "looks like a TorchScript archive" warning must not leak
        with pytest.raises(FormatError) as info:
            load_embedding_model(path, device="cpu")
    text = str(info.value)
    assert "\n" not in text and "TorchScript" in text and "scripted.pt" in text
    assert "torch.jit.load" in text and "state_dict()" in text
    assert "weights_only" not in text


def test_unknown_layout_names_the_nearest_and_what_differs(tmp_path: Path) -> None:
    state = create_model("mobilefacenet", embedding_size=16).state_dict()
    state = {k.replace("conv_sep.", "separable."): v for k, v in state.items()}  # a renamed block
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(FormatError) as info:
        load_embedding_model(path, device="cpu")
    text = str(info.value)
    assert "--arch" in text and "nearest known layout: insightface MobileFaceNet" in text
    assert "conv_sep.layers.0.weight" in text and "separable.layers.0.weight" in text
