"""Parameter and multiply-accumulate counts, in the convention of insightface's `flops.py`.

insightface's arcface_torch prints ptflops' multiply-accumulates (MACs) of one 112x112 image as
"GFLOPs": r100 12.1, r50 6.3, mbf 0.45 ("mobilefacenet-0.45G"). cdface counts the same MACs. Tables
elsewhere (OpenVINO, MFR: r100 24.2 G, r50 12.6 G) count FLOPs = 2 x MACs; double ours to compare.

Counting runs one forward pass with hooks that read shapes only; a model built under
`torch.device("meta")` is counted without allocating or computing anything. Matrix products that no
module holds (a transformer's q k^T and attn v) are reported by the module that computes them, through an
`extra_macs(output) -> int` method (MACs for one sample), as insightface adds its ViT's `extra_gflops`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cdface.models.registry import create_model, resolve_model_name

__all__ = ["count_flops", "count_parameters", "model_summary"]


def _conv_macs(module: nn.Conv2d, output: Tensor) -> int:
    per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    return int(output[0].numel()) * per_output


def _linear_macs(module: nn.Linear, output: Tensor) -> int:
    return int(output[0].numel()) * module.in_features


def count_flops(model: nn.Module, input_size: tuple[int, int] = (112, 112)) -> int:
    """Multiply-accumulates (MACs, insightface's "FLOPs") of Conv2d and Linear layers for ONE image, plus
    the `extra_macs(output)` of modules that define it (attention's functional matmuls).

    Biases, BN, LayerNorm, softmax, activations, pooling and additions are not counted (< 1% of the total).
    The model is run once in eval mode on a batch of one, under no_grad, on its own device (a
    meta-device model costs nothing); its training flag is restored afterwards.
    """
    counts: list[int] = []

    def hook(module: nn.Module, _inputs: Any, output: Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            counts.append(_conv_macs(module, output))
        elif isinstance(module, nn.Linear):
            counts.append(_linear_macs(module, output))
        else:
            counts.append(int(module.extra_macs(output)))  # type: ignore[operator]

    counted = [m for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) or callable(getattr(m, "extra_macs", None))]
    handles = [m.register_forward_hook(hook) for m in counted]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, int(input_size[0]), int(input_size[1]), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sum(counts)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them unless `trainable_only`), as insightface counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_summary(name: str, embedding_size: int = 512, **kwargs: Any) -> dict[str, Any]:
    """Params and MACs of a registered model at its own input size, built on the meta device (fast).

    Returns {"name", "params", "trainable_params", "macs", "gflops" (MACs / 1e9, insightface's
    "GFLOPs"), "input_size", "embedding_size"}.
    """
    key = resolve_model_name(name)
    with torch.device("meta"):
        model = create_model(key, embedding_size=embedding_size, **kwargs)
    input_size = tuple(model.input_cfg["input_size"])
    macs = count_flops(model, input_size)
    return {
        "name": key,
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "macs": macs,
        "gflops": macs / 1e9,
        "input_size": input_size,
        "embedding_size": int(embedding_size),
    }
