"""Several models in one `cdface eval`: each keeps its own card; --input-mean/--input-std/--bgr fill in only for
models without one; `--model PATH:key=value` sets one model's preprocessing; results.json says, per model and
value, where it came from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from inference_helpers import MeanColor, tiny_net
from inference_mock_data import write_pairs_bin

from cdface.cli import main
from cdface.errors import ConfigError
from cdface.eval.evaluate import parse_model_spec
from cdface.inference.export import export_onnx

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    carded = root / "carded.onnx"  # a card with ImageNet statistics, written by export
    assert export_onnx(MeanColor().eval(), carded, dynamic_batch=True, input_mean=tuple(IMAGENET[0]),
                       input_std=tuple(IMAGENET[1])).ok
    bare = root / "bare.onnx"
    shutil.copy(carded, bare)  # the same graph without a card
    pairs = root / "pairs.bin"
    write_pairs_bin(pairs, num_pairs=20, seed=3)
    return {"carded": carded, "bare": bare, "pairs": pairs, "root": root}


def _eval(setup, tmp_path, *extra):
    out = tmp_path / "out"
    rc = main(["eval", "--targets", str(setup["pairs"]), "--out", str(out), "--no-plots", "--no-progress",
               "--workers", "0", *extra])
    assert rc == 0
    return {m["model"]: m for m in json.loads((out / "results.json").read_text())["models"]}


def test_flags_fill_only_models_without_a_card(setup, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="cdface.inference"):
        models = _eval(setup, tmp_path, "--model", str(setup["carded"]), "--model", str(setup["bare"]),
                       "--input-mean", "0.1,0.2,0.3", "--input-std", "0.4,0.5,0.6")
    assert f"{setup['carded']}: --input-mean not applied: the value comes from model card" in caplog.text
    carded = models[str(setup["carded"])]["model_info"]
    assert carded["input_cfg"]["mean"] == pytest.approx(IMAGENET[0])
    assert carded["input_cfg"]["std"] == pytest.approx(IMAGENET[1])
    assert carded["preprocessing"]["values_from"]["mean"] == "model card"
    assert "--input-mean not applied" in carded["preprocessing"]["not_applied"]["mean"]
    bare = models[str(setup["bare"])]["model_info"]
    assert bare["input_cfg"]["mean"] == pytest.approx([0.1, 0.2, 0.3])
    assert bare["preprocessing"]["values_from"]["std"].startswith("command line (for a model without")
    assert bare["preprocessing"]["values_from"]["color"] == "default (assumed)"


def test_per_model_options_override_the_card(setup, tmp_path):
    spec = f"{setup['carded']}:mean=0.5:std=0.25,0.25,0.25:color=BGR"
    models = _eval(setup, tmp_path, "--model", spec, "--model", str(setup["bare"]))
    info = models[str(setup["carded"])]
    assert info["model_info"]["input_cfg"]["mean"] == [0.5] * 3
    assert info["model_info"]["input_cfg"]["std"] == [0.25] * 3 and info["model_info"]["input_cfg"]["color"] == "BGR"
    assert info["model_info"]["preprocessing"]["values_from"]["color"].startswith("command line, for this model")
    assert info["model_options"] == {"mean": [0.5] * 3, "std": [0.25] * 3, "bgr": True}
    # the other model is untouched by the first one's options
    assert models[str(setup["bare"])]["model_info"]["input_cfg"]["mean"] == [0.5] * 3
    assert models[str(setup["bare"])]["model_info"]["preprocessing"]["assumed"] == ["mean", "std", "color"]


def test_a_flag_kept_out_by_a_per_model_option_says_so(setup, tmp_path):
    models = _eval(setup, tmp_path, "--model", f"{setup['bare']}:mean=0.5", "--input-mean", "0.1,0.2,0.3")
    info = models[str(setup["bare"])]["model_info"]["preprocessing"]
    assert info["values_from"]["mean"].startswith("command line, for this model")
    assert info["not_applied"]["mean"].endswith("comes from command line, for this model (--model PATH:key=value)")


def test_a_module_without_its_own_contract_takes_the_fallback_and_one_with_it_keeps_it(setup):
    from inference_helpers import TinyNet

    from cdface.inference.loading import load_embedding_model

    flags = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "bgr": True}
    bare = load_embedding_model(tiny_net(), fallback_input=flags)
    assert bare.input_cfg["mean"] == (0.1, 0.2, 0.3) and bare.input_cfg["color"] == "BGR"
    module = TinyNet()
    module.input_cfg = {**module.input_cfg, "mean": tuple(IMAGENET[0]), "std": tuple(IMAGENET[1])}
    own = load_embedding_model(module, fallback_input=flags)  # its own non-default contract wins, all of it:
    # its RGB belongs with its ImageNet statistics, so --bgr meant for models without a contract stays out
    assert own.input_cfg["mean"] == tuple(IMAGENET[0]) and own.input_cfg["color"] == "RGB"
    assert set(own.preprocessing["not_applied"]) == {"mean", "std", "color"}


def test_model_spec_parsing(tmp_path):
    assert parse_model_spec("a/b.onnx") == ("a/b.onnx", {})
    assert parse_model_spec("b.onnx:mean=0.5:color=bgr") == ("b.onnx", {"mean": (0.5,) * 3, "bgr": True})
    odd = tmp_path / "x:mean=1"
    odd.write_bytes(b"")
    assert parse_model_spec(str(odd)) == (str(odd), {})  # an existing path is a path
    with pytest.raises(ConfigError, match="color must be RGB or BGR"):
        parse_model_spec("b.onnx:color=grey")
    with pytest.raises(ConfigError):
        parse_model_spec("b.onnx:std=1,2")
    assert np.isclose(parse_model_spec("C:/m.onnx:std=0.2")[1]["std"][0], 0.2)


@pytest.mark.parametrize("layout", ["adaface", "cvlface", "facenet"])
def test_a_recognised_release_keeps_its_whole_contract_against_eval_flags(layout, tmp_path):
    """A release's contract is one card: eval's --input-mean/--input-std/--bgr must not replace the values of it
    that happen to equal the project default (AdaFace's 0.5 beside its BGR, facenet's mean 0.5 beside its std
    128/255, CVLface's RGB [-1, 1]), which would feed the network a mix of two contracts."""
    import torch

    from cdface.inference.loading import load_embedding_model
    from cdface.models import create_model

    if layout == "facenet":
        direct = create_model("inception_resnet_v1", repeats=(1, 1, 1), channel_divisor=8)
        state = {**direct.state_dict(), "logits.weight": torch.zeros(10, 512), "logits.bias": torch.zeros(10)}
        path = tmp_path / "facenet.pt"
        torch.save(state, path)
    else:
        direct = create_model("adaface_ir18", widths=(8, 16, 32, 64))
        prefix = "model." if layout == "adaface" else "net."
        state = {f"{prefix}{k}": v for k, v in direct.state_dict().items()}
        if layout == "adaface":
            state["head.kernel"] = torch.zeros(512, 10)
        path = tmp_path / f"{layout}.pt"
        torch.save({"state_dict": state} if layout == "adaface" else state, path)
    expected = dict(direct.input_cfg) if layout != "cvlface" else {"mean": (0.5,) * 3, "std": (0.5,) * 3,
                                                                     "color": "RGB"}
    flags = {"mean": IMAGENET[0], "std": IMAGENET[1], "bgr": layout == "cvlface"}
    model = load_embedding_model(path, device="cpu", fallback_input=flags)
    for key in ("mean", "std", "color"):
        assert model.input_cfg[key] == expected[key], key
        assert model.preprocessing["values_from"][key] == "the model"
    assert set(model.preprocessing["not_applied"]) == {"mean", "std", "color"}
