"""`cdface models import`: ONNX graphs exported from our own modules in insightface's settings
(`recognition/arcface_torch/torch2onnx.py`: torch.onnx.export, eval mode, opset 11, input "data", batch axis
renamed symbolic; BatchNorms folded into the convolutions, or kept without constant folding) map back onto
the module, give the graph's embeddings, and load as a run's backbone; other graphs are refused in one line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from inference_helpers import SHARED, calibrate, random_faces

from cdface.cli import main
from cdface.errors import ConfigError, FormatError
from cdface.inference.loading import load_embedding_model
from cdface.inference.onnx_import import import_onnx
from cdface.models import create_model


def _insightface_export(model: torch.nn.Module, path, fold: bool = True):
    """torch2onnx.py's call (opset 11, input 'data', no initialisers as inputs), then its symbolic batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.randn(1, 3, 112, 112), str(path), input_names=["data"],
                          keep_initializers_as_inputs=False, verbose=False, opset_version=11, dynamo=False,
                          do_constant_folding=fold)
    graph = onnx.load(str(path))
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(graph, str(path))
    return path


@pytest.mark.parametrize("fold", [True, False], ids=["bn-folded", "bn-kept"])
@pytest.mark.parametrize("arch", ["iresnet_tiny", "mobilefacenet"])
def test_graphs_exported_from_our_modules_import_back(tmp_path, arch, fold):
    torch.manual_seed(0)
    original = calibrate(create_model(arch, embedding_size=32))
    graph = _insightface_export(original, tmp_path / "model.onnx", fold=fold)
    report = import_onnx(graph, arch, tmp_path / "run" / "backbone.pt")
    assert report.ok and report.max_abs_diff <= report.tolerance
    assert (report.folded_batchnorms > 0) == fold
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["arch"] == arch and card["embedding_size"] == 32 and card["mean"] == [0.5] * 3
    assert card["training"]["imported_from"] == str(graph)
    # the written backbone loads as any run's and embeds like the graph and like the original module
    faces = random_faces(3)
    imported = load_embedding_model(tmp_path / "run", device="cpu")
    from_graph = load_embedding_model(graph, device="cpu")(faces)
    np.testing.assert_allclose(imported(faces), from_graph, atol=1e-4 * max(1, np.abs(from_graph).max()))
    reference = load_embedding_model(original, device="cpu")(faces)
    np.testing.assert_allclose(imported(faces), reference, atol=1e-4 * max(1, np.abs(reference).max()))
    # parameters the exporter leaves alone come back bit for bit; folded ones only as their eval-mode effect
    state = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    kept = [f"{name}.weight" for name, m in original.named_modules()
            if isinstance(m, (torch.nn.PReLU, torch.nn.Linear))]
    assert len(kept) > 2
    for key in kept:
        torch.testing.assert_close(state[key], original.state_dict()[key], rtol=0, atol=0)
    if not fold:
        for key, value in original.state_dict().items():
            if not key.endswith("num_batches_tracked"):  # a counter of training steps: not in a graph
                torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_a_graph_that_normalises_inside_gets_a_card_with_its_normalisation(tmp_path):
    """mxnet-style Sub 127.5 / Mul 0.0078125 in front: the card says mean 0.5, std 128/255."""
    from onnx import TensorProto, helper, numpy_helper

    torch.manual_seed(0)
    original = calibrate(create_model("iresnet_tiny", embedding_size=16))
    path = _insightface_export(original, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array(127.5, np.float32), "c_sub"),
                              numpy_helper.from_array(np.array(0.0078125, np.float32), "c_mul")])
    for node in graph.node:
        node.input[:] = ["scaled" if n == "data" else n for n in node.input]
    nodes = [helper.make_node("Sub", ["raw", "c_sub"], ["centred"], name="_minusscalar0"),
             helper.make_node("Mul", ["centred", "c_mul"], ["scaled"], name="_mulscalar0")] + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["None", 3, 112, 112]))
    onnx.save(model, str(path))
    import_onnx(path, "iresnet_tiny", tmp_path / "r50.pt")
    card = json.loads((tmp_path / "r50.json").read_text())
    assert card["mean"] == pytest.approx([0.5] * 3) and card["std"] == pytest.approx([128 / 255] * 3)
    faces = random_faces(2)
    expected = load_embedding_model(path, device="cpu")(faces)
    got = load_embedding_model(tmp_path / "r50.pt", device="cpu")(faces)
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1, np.abs(expected).max()))


def test_another_architecture_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    graph = _insightface_export(calibrate(create_model("iresnet_tiny", embedding_size=16)), tmp_path / "t.onnx")
    with pytest.raises(FormatError) as info:
        import_onnx(graph, "mobilefacenet", tmp_path / "x.pt")
    message = str(info.value)
    assert "does not map onto mobilefacenet" in message and "\n" not in message
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ConfigError, match="LayerNorm|pos_embed"):
        import_onnx(graph, "vit_tiny", tmp_path / "x.pt")


def test_cli_import_writes_backbone_and_card(tmp_path, capsys):
    torch.manual_seed(0)
    graph = _insightface_export(calibrate(create_model("iresnet_tiny", embedding_size=16)), tmp_path / "t.onnx")
    rc = main(["models", "import", str(graph), "--arch", "iresnet_tiny", "--out", f"{tmp_path / 'out'}/"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert (tmp_path / "out" / "backbone.pt").is_file() and (tmp_path / "out" / "model.json").is_file()
    assert main(["models", "import", str(graph), "--arch", "mobilefacenet", "--out", str(tmp_path / "o2")]) == 2
    assert "does not map onto mobilefacenet" in capsys.readouterr().err


def test_the_shared_foamliu_mobilefacenet_does_not_map_and_says_why(tmp_path):
    path = SHARED / "models" / "mobilefacenet-foamliu.onnx"
    if not path.is_file():
        pytest.skip("../shared is not available")
    with pytest.raises(FormatError) as info:
        import_onnx(path, "mobilefacenet", tmp_path / "x.pt")
    message = str(info.value)
    assert "does not map onto mobilefacenet" in message and "Clip" in message and "\n" not in message
