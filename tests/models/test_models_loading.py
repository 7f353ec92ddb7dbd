"""Strict loading (round trip, readable mismatch errors) and architecture inference from state_dicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cdface.errors import FormatError
from cdface.models import (
    create_model,
    infer_arch_from_state_dict,
    infer_model_config,
    load_state_dict_strict,
    strip_wrapper_prefixes,
)


def _perturb_bn_stats(model: torch.nn.Module) -> None:
    """Non-default running stats, so a round trip that dropped buffers would change the outputs."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)


@pytest.mark.parametrize("name", ["iresnet18", "ir18", "mobilefacenet"])
def test_strict_round_trip_through_file(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model(name, embedding_size=32).eval()
    _perturb_bn_stats(source)
    path = tmp_path / "backbone.pt"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)  # a DataParallel file

    torch.manual_seed(1)
    fresh = create_model(name, embedding_size=32).eval()
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert load_state_dict_strict(fresh, loaded, path) is fresh
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), source(x), rtol=1e-5, atol=1e-5)


def test_mismatch_error_names_source_keys_and_guess() -> None:
    with torch.device("meta"):
        model = create_model("iresnet18")
        other = create_model("ir18").state_dict()
    with pytest.raises(FormatError) as info:
        load_state_dict_strict(model, other, "weights/ir18.pth")
    message = str(info.value)
    assert info.value.path == "weights/ir18.pth"
    assert "missing key(s): conv1.weight" in message
    assert "unexpected key(s): input_layer.0.weight" in message
    assert "more)" in message  # long lists are cut, with a count
    assert "looks like ir18" in message


def test_shape_mismatch_is_reported() -> None:
    with torch.device("meta"):
        model = create_model("mobilefacenet", embedding_size=512)
        state = create_model("mobilefacenet", embedding_size=128).state_dict()
    with pytest.raises(FormatError, match=r"features\.layers\.2\.weight: checkpoint \(128, 512\) vs model "
                                          r"\(512, 512\)"):
        load_state_dict_strict(model, state, "mbf128.pt")


def test_non_tensor_values_are_rejected() -> None:
    with torch.device("meta"):
        model = create_model("mobilefacenet")
    state = dict(model.state_dict())
    state["epoch"] = 3
    with pytest.raises(FormatError, match="key 'epoch'"):
        load_state_dict_strict(model, state, "ckpt.pt")


def test_wrapper_prefixes_are_stripped_only_when_all_keys_have_them() -> None:
    t = torch.zeros(1)
    assert list(strip_wrapper_prefixes({"module.a": t, "module.b": t})) == ["a", "b"]
    assert list(strip_wrapper_prefixes({"module.a": t, "b": t})) == ["module.a", "b"]
    # torch.compile inside DDP, and the other nesting
    assert list(strip_wrapper_prefixes({"module._orig_mod.a": t, "module._orig_mod.b": t})) == ["a", "b"]
    assert list(strip_wrapper_prefixes({"_orig_mod.module.a": t})) == ["a"]


def test_a_model_whose_own_keys_carry_a_prefix_keeps_it() -> None:
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Linear(2, 2)

    model = Wrapper()
    load_state_dict_strict(model, {k: torch.ones_like(v) for k, v in model.state_dict().items()}, "w.pt")
    assert torch.equal(model.backbone.weight, torch.ones(2, 2))


@pytest.mark.parametrize("size,affine", [(224, True), (112, False)])
def test_infer_ir_config_recovers_input_size_and_affine(size: int, affine: bool) -> None:
    with torch.device("meta"):
        model = create_model("ir_se50", embedding_size=256, input_size=size, output_affine=affine)
    state = model.state_dict()
    config = infer_model_config(state)
    assert config == {"arch": "ir_se50", "embedding_size": 256,
                      "model_kwargs": {"input_size": size, "output_affine": affine}}
    with torch.device("meta"):
        rebuilt = create_model(config["arch"], config["embedding_size"], **config["model_kwargs"])
    load_state_dict_strict(rebuilt, state, "x.pt")


def test_infer_returns_none_for_unknown_layouts() -> None:
    assert infer_arch_from_state_dict({"weight": torch.zeros(3)}) is None
    with torch.device("meta"):
        state = create_model("iresnet50").state_dict()
    truncated = {k: v for k, v in state.items() if not k.startswith("layer3.13.")}  # 13 blocks: no such net
    assert infer_arch_from_state_dict(truncated) is None
