"""Real forward/backward of the small backbones, and the options that must not change the numbers."""

from __future__ import annotations

import pytest
import torch

from cdface.models import create_model


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Random-weight IResNets have activations ~1e6: compare relative to the largest value."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(expected.abs().max()))


@pytest.mark.parametrize("name", ["iresnet18", "ir18", "mobilefacenet", "iresnet_tiny"])
def test_forward_backward_and_gradient_checkpointing(name: str) -> None:
    torch.manual_seed(0)
    options = {} if name.startswith("mobilefacenet") else {"dropout": 0.0}  # no random masks: passes comparable
    model = create_model(name, embedding_size=16, **options).train()
    x = torch.randn(2, 3, 112, 112)
    out = model(x)
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    out.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert sorted(grads) == sorted(trainable)
    assert all(torch.isfinite(g).all() for g in grads.values())
    if name == "iresnet18":
        assert "features.weight" not in grads and "features.bias" in grads  # insightface's frozen scale
    if not hasattr(model, "gradient_checkpointing"):
        return
    # the same step with every block recomputed in backward: same outputs, same gradients
    # (train-mode BN uses batch statistics, so the running stats the first pass updated do not matter)
    model.zero_grad()
    model.gradient_checkpointing = True
    out_ckpt = model(x)
    _assert_close(out_ckpt, out.detach(), rtol=1e-5)
    out_ckpt.square().sum().backward()
    for key, grad in grads.items():
        _assert_close(model.get_parameter(key).grad, grad)


def test_fp16_and_channels_last_keep_cpu_numbers() -> None:
    torch.manual_seed(0)
    base = create_model("iresnet18", embedding_size=16).eval()
    variant = create_model("iresnet18", embedding_size=16, fp16=True, channels_last=True).eval()
    variant.load_state_dict(base.state_dict())
    assert variant.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        out = variant(x)
        assert out.dtype == torch.float32
        _assert_close(out, base(x))
