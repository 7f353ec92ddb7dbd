"""ONNX export: onnxruntime computes what PyTorch computes (fp32 within 1e-4), for cdface's backbones."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from inference_helpers import calibrate, normalise, random_faces, tiny_net

from cdface.inference.export import export_onnx
from cdface.inference.loading import load_embedding_model
from cdface.models import create_model


def _ort(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("dynamic", [False, True])
def test_tiny_parity_and_sidecar(tmp_path, dynamic):
    net = tiny_net()
    report = export_onnx(net, tmp_path / "m.onnx", dynamic_batch=dynamic, opset=17)
    assert report.ok and report.max_abs_diff <= 1e-4
    # independent check: our own onnxruntime call on real-looking images
    faces = random_faces(3 if dynamic else 1)
    x = normalise(faces)
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(_ort(tmp_path / "m.onnx", x.numpy()), ref, atol=1e-4)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["embedding_size"] == 16 and meta["mean"] == [0.5] * 3 and meta["color"] == "RGB"
    assert meta["dynamic_batch"] is dynamic
    assert net.training is False and next(net.parameters()).device.type == "cpu"


def test_input_config_travels_with_the_onnx(tmp_path):
    net = tiny_net()
    export_onnx(net, tmp_path / "m.onnx", input_mean=(0.485, 0.456, 0.406), input_std=(0.229, 0.224, 0.225), bgr=True)
    loaded = load_embedding_model(tmp_path / "m.onnx", device="cpu")
    assert loaded.input_cfg["color"] == "BGR" and loaded.input_cfg["std"] == (0.229, 0.224, 0.225)
    faces = random_faces(2)
    x = normalise(faces[..., ::-1].copy(), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(faces), net(x).numpy(), atol=1e-4)


def test_fp16_export_runs_in_half(tmp_path):
    report = export_onnx(tiny_net(), tmp_path / "h.onnx", fp16=True)
    assert report.ok
    session = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"


def _ir_se18() -> torch.nn.Module:
    from cdface.models.ir import IRBackbone

    return IRBackbone(18, mode="ir_se", embedding_size=64)  # IR-SE blocks at the cost of the smallest depth


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilefacenet", "iresnet18", "ir_se18"])
def test_cdface_backbones(tmp_path, arch):
    torch.manual_seed(0)
    model = _ir_se18() if arch == "ir_se18" else create_model(arch, embedding_size=64)
    calibrate(model)
    report = export_onnx(model, tmp_path / f"{arch}.onnx")
    assert report.ok, report
