"""ONNX graphs as people have them (uint8 / float16 / float input, NCHW / NHWC, 3 or 1 channels, normalising
inside or not) get the right input without flags: each variant is the same small network behind other input
nodes, so its embeddings must equal the float [-1, 1] NCHW reference's. What cannot be fed is one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from inference_helpers import SHARED, random_faces, tiny_net
from onnx import TensorProto, helper, numpy_helper

from cdface.cli import main
from cdface.errors import ConfigError, FormatError
from cdface.inference.export import export_onnx
from cdface.inference.loading import load_embedding_model

_TYPES = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8,
          "int32": TensorProto.INT32}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A cdface export of a small calibrated net: float (1, 3, 112, 112) in [-1, 1], its card beside it."""
    path = tmp_path_factory.mktemp("ref") / "ref.onnx"
    assert export_onnx(tiny_net(), path, opset=17).ok
    return path


def _variant(reference, out, *, dtype="float", nhwc=False, grey=False, inside=(), batch=1):
    """The reference network behind a new input: optional Transpose (NHWC), Cast (non-float), the `inside`
    (op, constant, node name) nodes, and grey -> 3 identical channels (Concat) for a 1-channel input."""
    model = onnx.load(str(reference))
    graph = model.graph
    channels = 1 if grey else 3
    shape = [batch, 112, 112, channels] if nhwc else [batch, channels, 112, 112]
    new_input = helper.make_tensor_value_info("raw", _TYPES[dtype], shape)
    nodes, current = [], "raw"

    def add(op, inputs, name, **attrs):
        nonlocal current
        out_name = f"{name}_out"
        nodes.append(helper.make_node(op, inputs, [out_name], name=name, **attrs))
        current = out_name

    if nhwc:
        add("Transpose", [current], "to_nchw", perm=[0, 3, 1, 2])
    if dtype != "float":
        add("Cast", [current], "cast", to=TensorProto.FLOAT)
    for i, (op, value, name) in enumerate(inside):
        const = np.asarray(value, dtype=np.float32).reshape((1, -1, 1, 1) if np.ndim(value) else ())
        graph.initializer.append(numpy_helper.from_array(const, f"norm_const_{i}"))
        add(op, [current, f"norm_const_{i}"], name)
    if grey:
        add("Concat", [current, current, current], "grey_to_rgb", axis=1)
    for node in graph.node:
        node.input[:] = [current if name == graph.input[0].name else name for name in node.input]
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    del graph.input[:]
    graph.input.append(new_input)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def _reference_embeddings(reference, faces, grey=False, scale=1 / 127.5):
    """The reference graph on the preprocessing written out: (x - 127.5) * scale (1/127.5: cdface's [-1, 1];
    0.0078125 = 1/128: mxnet ArcFace's), NCHW float32; grey faces as ITU-R 601 luma rounded to integers, in all
    three channels."""
    x = faces.astype(np.float32)
    if grey:
        luma = np.round(x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114)
        x = np.repeat(luma[..., None], 3, axis=-1)
    x = ((x - 127.5) * np.float32(scale)).transpose(0, 3, 1, 2).astype(np.float32)
    session = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])


MXNET = (("Sub", 127.5, "_minusscalar0"), ("Mul", 0.0078125, "_mulscalar0"))  # mxnet ArcFace's first nodes


@pytest.mark.parametrize(
    "kind",
    [
        dict(dtype="uint8", nhwc=True, inside=MXNET),  # an RGB graph taking uint8 pixels, normalising inside
        dict(dtype="uint8", nhwc=False, inside=(("Div", 127.5, "Div_0"), ("Sub", 1.0, "Sub_1"))),
        dict(dtype="float", nhwc=False, inside=MXNET),  # an mxnet-converted ArcFace graph
        dict(dtype="float", nhwc=True, inside=(("Sub", 0.5, "sub"), ("Div", 0.5, "div"))),  # takes 0..1 values
        dict(dtype="float16", nhwc=True),  # normalised float16 NHWC input: the card-less default [-1, 1]
        dict(dtype="uint8", grey=True, inside=MXNET),  # a grey (LightCNN-style) uint8 graph
    ],
    ids=["uint8-nhwc", "uint8-nchw-div", "mxnet-float", "unit-nhwc", "float16-nhwc", "grey-uint8"],
)
def test_each_input_kind_gets_the_reference_input_without_flags(reference, tmp_path, kind):
    path = _variant(reference, tmp_path / "variant.onnx", **kind)
    faces = random_faces(3)
    model = load_embedding_model(path, device="cpu")
    scale = 0.0078125 if kind.get("inside") == MXNET else 1 / 127.5
    expected = _reference_embeddings(reference, faces, grey=kind.get("grey", False), scale=scale)
    atol = 2e-2 if kind["dtype"] == "float16" else 1e-4
    np.testing.assert_allclose(model(faces), expected, atol=atol * max(1.0, np.abs(expected).max()))
    if kind.get("inside"):
        assert model.preprocessing["values_from"]["mean"].startswith("the graph")
        assert model.preprocessing["assumed"] == []
    if kind["dtype"] == "uint8":
        assert model.preprocess(faces).dtype.is_floating_point is False


def test_a_grey_float_graph_takes_its_card(reference, tmp_path):
    path = _variant(reference, tmp_path / "grey.onnx", grey=True)
    (tmp_path / "grey.json").write_text(json.dumps({"mean": [0.5], "std": [0.5]}))
    faces = random_faces(2)
    model = load_embedding_model(path, device="cpu")
    np.testing.assert_allclose(model(faces), _reference_embeddings(reference, faces, grey=True), atol=1e-4)
    assert model.preprocessing["values_from"]["color"].startswith("the graph (1 channel")


def test_dynamic_batch_uint8_graph_and_flip_fusion(reference, tmp_path):
    """A symbolic batch and the flipped half: the embedder's pass over [x; mirrored x] stays uint8."""
    from cdface.inference import FaceEmbedder

    model = onnx.load(str(_variant(reference, tmp_path / "u8.onnx", dtype="uint8", nhwc=True, inside=MXNET)))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(tmp_path / "u8.onnx"))
    faces = random_faces(3)
    got = FaceEmbedder(str(tmp_path / "u8.onnx"), device="cpu").embed(faces)
    plain = _reference_embeddings(reference, faces, scale=0.0078125)
    mirrored = _reference_embeddings(reference, np.ascontiguousarray(faces[:, :, ::-1]), scale=0.0078125)
    fused = plain + mirrored
    np.testing.assert_allclose(got, fused / np.linalg.norm(fused, axis=1, keepdims=True), atol=1e-5)


def test_graphs_that_do_not_normalise_inside_are_not_mistaken(reference, tmp_path):
    """cdface's own export starts with a Conv; a Mul by 1 is not a normalisation; nor is x * 0.5 + 0.5."""
    assert load_embedding_model(reference, device="cpu").graph_input.inner is None
    identity = _variant(reference, tmp_path / "one.onnx", inside=(("Mul", 1.0, "Mul_0"), ("Sub", 0.0, "Sub_0")))
    assert load_embedding_model(identity, device="cpu").graph_input.inner is None
    half = _variant(reference, tmp_path / "half.onnx", inside=(("Mul", 0.5, "Mul_0"), ("Add", 0.5, "Add_0")))
    assert load_embedding_model(half, device="cpu").graph_input.inner is None


def test_card_mean_wins_over_the_graph_and_flags_cannot_normalise_uint8(reference, tmp_path):
    path = _variant(reference, tmp_path / "m.onnx", inside=MXNET)
    (tmp_path / "m.json").write_text(json.dumps({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}))
    assert load_embedding_model(path, device="cpu").preprocessing["values_from"]["mean"] == "model card"
    u8 = _variant(reference, tmp_path / "u8.onnx", dtype="uint8", nhwc=True, inside=MXNET)
    with pytest.raises(ConfigError, match=r"uint8 \[1, 112, 112, 3\]"):
        load_embedding_model(u8, device="cpu", input_mean=(0.5,) * 3)


@pytest.mark.parametrize(
    "dtype, shape, text",
    [("int32", [1, 3, 112, 112], "tensor(int32) [1, 3, 112, 112]"),
     ("float", [1, 112, 112, 2], "tensor(float) [1, 112, 112, 2]"),
     ("float", [1, 37632], "tensor(float) [1, 37632]")],
)
def test_what_cannot_be_fed_is_one_line_naming_type_and_shape(tmp_path, dtype, shape, text):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", _TYPES[dtype], shape)],
        [helper.make_tensor_value_info("y", _TYPES[dtype], shape)],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(FormatError) as info:
        load_embedding_model(path, device="cpu")
    assert text in str(info.value) and "\n" not in str(info.value)


def test_two_inputs_are_refused_in_one_line(tmp_path):
    shape = [1, 3, 112, 112]
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(FormatError, match="one image input; it takes 2"):
        load_embedding_model(path, device="cpu")


@pytest.mark.parametrize("outputs", [1, 9])
def test_a_detector_graph_is_refused_as_an_embedding_model(tmp_path, capsys, outputs):
    """A face detector (one 640x640 input; score / box maps, or insightface's 5+ outputs) handed to --model used
    to be run and its first output flattened into an "embedding" (exit 0): it must be one line naming the file."""
    shape = [1, 3, 640, 640]
    maps = [f"y{i}" for i in range(outputs)]
    graph = helper.make_graph(
        [helper.make_node("Identity" if outputs == 1 else "Flatten", ["x"], [name]) for name in maps], "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape if outputs == 1 else [1, 3 * 640 * 640])
         for name in maps],
    )
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(FormatError) as info:
        load_embedding_model(path, device="cpu")
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    assert "detector" in str(info.value)
    image = tmp_path / "face.png"
    import cv2
    cv2.imwrite(str(image), random_faces(1)[0])
    assert main(["embed", str(image), "--model", str(path), "--out", str(tmp_path / "e.npy"), "--device", "cpu",
                 "--no-progress"]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.slow
def test_the_real_model_normalising_inside_reaches_its_reference_without_flags(tmp_path, capsys):
    """The shared MobileFaceNet with ImageNet normalisation moved inside the graph behind a uint8 NHWC input:
    `cdface eval` with no flag and no card scores the insightface-code reference 0.96667 +- 0.01491."""
    model_path = SHARED / "models" / "mobilefacenet-foamliu.onnx"
    pairs = SHARED / "data" / "realfaces" / "pairs.bin"
    if not (model_path.is_file() and pairs.is_file()):
        pytest.skip("../shared (real model and pairs.bin) is not available")
    reference_json = json.loads((SHARED / "data" / "realfaces" / "reference_mobilefacenet.json").read_text())
    inside = (("Sub", [123.675, 116.28, 103.53], "Sub_mean"), ("Div", [58.395, 57.12, 57.375], "Div_std"))
    variant = _variant(model_path, tmp_path / "mbf_uint8.onnx", dtype="uint8", nhwc=True, inside=inside)
    rc = main(["eval", "--model", str(variant), "--targets", str(pairs), "--json", "--no-progress",
               "--workers", "1"])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)[str(pairs)]
    assert metrics["accuracy"] == pytest.approx(reference_json["accuracy"], abs=5e-6)
    assert metrics["accuracy_std"] == pytest.approx(reference_json["accuracy_std"], abs=5e-6)
