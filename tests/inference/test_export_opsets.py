"""ONNX export of every architecture at the opsets insightface uses (11, as its torch2onnx.py, and 17), in
float32 and float16, each checked by export_onnx's own parity check and by an independent onnxruntime run;
a failing export is one line."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from inference_helpers import calibrate
from torch import nn
from torch.nn import functional as F

from cdface.cli import main
from cdface.inference.export import ExportError, export_onnx
from cdface.models import create_model


def _small(arch: str) -> nn.Module:
    """Each architecture family at its smallest (tiny registered variants, or one block a stage)."""
    from cdface.models.ir import IRBackbone
    from cdface.models.iresnet import IResNet
    from cdface.models.mobilefacenet import MobileFaceNet

    torch.manual_seed(0)
    build = {
        "iresnet_tiny": lambda: create_model("iresnet_tiny", embedding_size=32),
        "vit_tiny": lambda: create_model("vit_tiny", embedding_size=32),
        "transface_tiny": lambda: create_model("transface_tiny", embedding_size=32),  # the ViT + its patch gate
        "mobilefacenet": lambda: MobileFaceNet(32, blocks=(1, 1, 1, 1), scale=1),
        "iresnet": lambda: IResNet((1, 1, 1, 1), embedding_size=32),
        "ir_se18": lambda: IRBackbone(18, mode="ir_se", embedding_size=32),
    }[arch]
    return calibrate(build())


def _check(model: nn.Module, path, opset: int, fp16: bool) -> None:
    report = export_onnx(model, path, opset=opset, fp16=fp16)
    assert report.ok, report
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == opset
    assert "Attention" not in {node.op_type for node in graph.graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == ("tensor(float16)" if fp16 else "tensor(float)")
    x = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(np.float16 if fp16 else np.float32)})[0]
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(got.astype(np.float32) - ref).max() <= (2e-2 if fp16 else 1e-4) * scale
    assert float(np.abs(ref).max()) > 1e-3  # calibrated: the check compares real outputs, not zeros


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("arch", ["iresnet_tiny", "vit_tiny", "transface_tiny", "mobilefacenet"])
def test_tiny_architectures_export_at_insightface_opsets(tmp_path, arch, opset, fp16):
    _check(_small(arch), tmp_path / f"{arch}.onnx", opset, fp16)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["iresnet", "ir_se18"])
def test_full_width_architectures_export_at_opset_11_in_fp16(tmp_path, arch):
    """The full-width families at the hardest setting (their fp32 opset-17 export: test_inference_export.py)."""
    _check(_small(arch), tmp_path / f"{arch}.onnx", 11, True)


def test_vit_export_writes_attention_out_and_keeps_sdpa_in_pytorch(monkeypatch):
    """In PyTorch the ViT still calls SDPA; only under export does it take the explicit path."""
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = _small("vit_tiny")
    calls.clear()  # calibration ran the model too
    with torch.no_grad():
        model(torch.randn(1, 3, 112, 112))
    assert len(calls) == 2  # one per block


class _SdpaNet(nn.Module):
    """A net that calls SDPA itself: not exportable before opset 14."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 16, stride=16)
        self.input_cfg = {"input_size": (112, 112), "mean": (0.5,) * 3, "std": (0.5,) * 3, "color": "RGB"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv(x).flatten(2).transpose(1, 2)
        return F.scaled_dot_product_attention(t, t, t).flatten(1)


def test_a_failing_export_is_one_line_without_the_graph_dump(tmp_path, capfd):
    with pytest.raises(ExportError) as info:
        export_onnx(_SdpaNet().eval(), tmp_path / "x.onnx", opset=11)
    message = str(info.value)
    assert "\n" not in message and "opset 11" in message and "_SdpaNet" in message
    assert "scaled_dot_product_attention" in message
    captured = capfd.readouterr()
    assert "graph(" not in captured.err and "Torch IR graph" not in captured.err


def test_cli_export_of_a_vit_at_opset_11_in_fp16(tmp_path, capsys):
    model = _small("vit_tiny")
    torch.save(model.state_dict(), tmp_path / "vit.pt")
    rc = main(["export", "--model", str(tmp_path / "vit.pt"), "--arch", "vit_tiny", "--out",
               str(tmp_path / "vit.onnx"), "--opset", "11", "--fp16"])
    assert rc == 0, capsys.readouterr().err
    assert '"ok": true' in capsys.readouterr().out
