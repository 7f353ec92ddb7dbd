"""Map an ONNX graph's weights (initialisers) onto one of our modules, when the graph is that architecture.

insightface releases its best recognition models only as ONNX (`w600k_r50.onnx` in `buffalo_l`,
`glintr100.onnx`), written by `recognition/arcface_torch/torch2onnx.py`: `torch.onnx.export` of the backbone in
eval mode at opset 11 with constant folding. That exporter folds each BatchNorm that directly follows a
convolution into the convolution (the Conv gains a bias; the BatchNorm node disappears) and keeps the others
(IResNet's pre-activation `bn1`, its `bn2` after the last stage, the `features` BatchNorm1d) as
BatchNormalization nodes. Node names carry no usable module names after folding, so the mapping is by
structure: the graph's parametric nodes (Conv, BatchNormalization, PRelu, Gemm / MatMul + Add) in the graph's
order are matched one by one with our module's parametric layers in the order its forward runs them (the order
the exporter traced), each shape checked.

A folded BatchNorm cannot be unfolded (its statistics are gone): its convolution takes the fused weight and our
BatchNorm becomes the identity that carries the fused bias (weight 1, bias = the fused bias, running mean 0,
running variance 1 - eps, so that var + eps = 1). Evaluation-mode outputs are the graph's; a fine-tune should
keep BatchNorm statistics frozen at first (training-mode BatchNorm would normalise with batch statistics).

Anything that does not line up is a one-line `FormatError` saying where and how the graph differs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cdface.errors import ConfigError, FormatError

__all__ = ["OnnxWeightMapping", "graph_constants", "map_onnx_weights"]

_PARAM_OPS = ("Conv", "BatchNormalization", "PRelu", "Gemm", "MatMul")
_LAYERS = (nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.PReLU, nn.Linear)


@dataclass
class OnnxWeightMapping:
    """The state_dict built from the graph and what was done to build it."""

    state_dict: dict[str, Tensor]
    folded_batchnorms: list[str] = field(default_factory=list)  # our BatchNorms restored as identity + bias
    graph_ops: dict[str, int] = field(default_factory=dict)


def map_onnx_weights(
    path: str | Path, module: nn.Module, input_size: tuple[int, int] = (112, 112)
) -> OnnxWeightMapping:
    """The state_dict of `module` (eval mode) whose forward computes what the graph at `path` computes.

    FormatError (one line) when the graph is not that architecture: another count or order of parametric nodes,
    another shape, a BatchNorm epsilon that differs, or a layer type import cannot map (e.g. LayerNorm).
    """
    import onnx

    path = Path(path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError and friends
        raise FormatError(path, None, f"a readable ONNX model ({type(exc).__name__}: {exc})") from None
    weights = graph_constants(graph)
    ops = Counter(node.op_type for node in graph.node)
    summary = ", ".join(f"{n} {op}" for op, n in ops.most_common() if op not in ("Constant",))
    arch = getattr(module, "arch", type(module).__name__)
    nodes = _parametric_nodes(graph, weights)
    layers = _layers_in_forward_order(module, input_size)
    state: dict[str, Tensor] = {k: v.detach().clone() for k, v in module.state_dict().items()}
    folded: list[str] = []

    def refuse(what: str) -> FormatError:
        return FormatError(path, None, f"does not map onto {arch}: {what} (graph: {summary})")

    node_iter = iter(nodes)
    position = 0  # 1-based index of the graph's parametric node being matched, for the messages
    skip: set[str] = set()
    for index, (name, layer) in enumerate(layers):
        if name in skip:
            continue
        node = next(node_iter, None)
        position += 1
        if node is None:
            raise refuse(f"the graph's parametric nodes end before the model's layer {name} ({type(layer).__name__})")
        op, params, attrs = node
        if isinstance(layer, nn.Conv2d):
            _expect(refuse, op, "Conv", name, layer)
            _copy(refuse, state, f"{name}.weight", params[0], f"parametric node {position} (Conv) weight")
            bias = params[1] if len(params) > 1 else None
            if layer.bias is not None:
                if bias is None:
                    raise refuse(f"the model's {name} has a bias, the graph's Conv has none")
                _copy(refuse, state, f"{name}.bias", bias, "Conv bias")
            elif bias is not None:  # a BatchNorm folded into this conv: ours must come next
                follower = layers[index + 1] if index + 1 < len(layers) else None
                if follower is None or not isinstance(follower[1], nn.BatchNorm2d):
                    raise refuse(f"the graph's Conv for {name} has a bias, and the model neither has one nor a "
                                 "BatchNorm after it")
                bn_name, bn = follower
                _identity_batchnorm(refuse, state, bn_name, bn, bias)
                folded.append(bn_name)
                skip.add(bn_name)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            _expect(refuse, op, "BatchNormalization", name, layer)
            eps = float(attrs.get("epsilon", 1e-5))
            if abs(eps - layer.eps) > 1e-9:
                raise refuse(f"the graph's BatchNormalization for {name} has epsilon {eps:g}, the model {layer.eps:g}")
            for key, value in zip(("weight", "bias", "running_mean", "running_var"), params):
                if layer.affine or key.startswith("running"):
                    _copy(refuse, state, f"{name}.{key}", value, "BatchNormalization")
                elif not np.allclose(value, 1.0 if key == "weight" else 0.0):
                    raise refuse(f"the model's {name} has no affine weights, the graph's BatchNormalization does")
        elif isinstance(layer, nn.PReLU):
            _expect(refuse, op, "PRelu", name, layer)
            _copy(refuse, state, f"{name}.weight", params[0].reshape(-1), "PRelu slope")
        elif isinstance(layer, nn.Linear):
            if op not in ("Gemm", "MatMul"):
                _expect(refuse, op, "Gemm", name, layer)
            weight = params[0]
            if op == "MatMul" or not attrs.get("transB", 0):
                weight = weight.T  # (in, out) -> torch's (out, in)
            _copy(refuse, state, f"{name}.weight", weight, f"{op} weight")
            bias = params[1] if len(params) > 1 else None
            if (layer.bias is None) != (bias is None):
                raise refuse(f"the model's {name} {'has' if layer.bias is not None else 'has no'} bias, the graph's "
                             f"{op} {'has none' if bias is None else 'has one'}")
            if bias is not None:
                _copy(refuse, state, f"{name}.bias", bias, f"{op} bias")
    extra = list(node_iter)
    if extra:
        raise refuse(f"{len(extra)} parametric node(s) of the graph are left over after the model's layers, the "
                     f"first a {extra[0][0]}")
    return OnnxWeightMapping(state, folded, dict(ops))


def graph_constants(graph: Any, max_elements: int | None = None) -> dict[str, np.ndarray]:
    """{tensor name: value} of every constant tensor of an ONNX graph: initialisers, Constant nodes, and what
    Identity / Unsqueeze / Transpose make of them (torch shares equal initialisers through Identity; without
    constant folding a PReLU slope reaches its node through Unsqueeze, which keeps the value (callers reshape),
    and a Linear through Transpose + MatMul). `max_elements` skips larger tensors (never converted)."""
    from onnx import numpy_helper

    def small(dims: Any) -> bool:
        return max_elements is None or int(np.prod(dims)) <= max_elements

    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer
           if small(init.dims) and not init.data_location}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            if small(node.attribute[0].t.dims):
                out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type in ("Identity", "Unsqueeze") and node.input and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
        elif node.op_type == "Transpose" and node.input[0] in out:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            out[node.output[0]] = np.transpose(out[node.input[0]], perm)
    return out


def _expect(refuse: Any, op: str, wanted: str, name: str, layer: nn.Module) -> None:
    if op != wanted:
        raise refuse(f"the model's {name} ({type(layer).__name__}) meets a {op} node where a {wanted} was expected")


def _copy(refuse: Any, state: dict[str, Tensor], key: str, value: np.ndarray, what: str) -> None:
    target = state[key]
    tensor = torch.from_numpy(np.array(value, copy=True)).to(target.dtype)  # onnx arrays are read-only
    if tuple(tensor.shape) != tuple(target.shape):
        raise refuse(f"the graph's {what} has shape {list(tensor.shape)}, the model's {key} {list(target.shape)}")
    state[key] = tensor


def _identity_batchnorm(refuse: Any, state: dict[str, Tensor], name: str, bn: nn.BatchNorm2d, bias: np.ndarray) -> None:
    """weight 1, bias = the folded bias, mean 0, var 1 - eps: (x - 0) / sqrt(1) * 1 + bias."""
    channels = bn.num_features
    state[f"{name}.weight"] = torch.ones(channels)
    _copy(refuse, state, f"{name}.bias", bias, "Conv bias (folded BatchNorm)")
    state[f"{name}.running_mean"] = torch.zeros(channels)
    state[f"{name}.running_var"] = torch.full((channels,), 1.0 - bn.eps)


def _parametric_nodes(graph: Any, weights: dict[str, np.ndarray]) -> list[tuple[str, list[np.ndarray], dict[str, Any]]]:
    """(op, [constant operands], attributes) of each Conv / BatchNormalization / PRelu / Gemm / MatMul with
    constant weights, in graph order; a MatMul's bias is the constant of the Add that follows it."""
    import onnx

    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for node in graph.node:
        if node.op_type not in _PARAM_OPS:
            continue
        operands = [weights[name] for name in node.input[1:] if name in weights]
        if not operands:
            continue  # a MatMul of two activations (attention) carries no weight
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMul":
            users = consumers.get(node.output[0], [])
            if len(users) == 1 and users[0].op_type == "Add":
                bias = [weights[n] for n in users[0].input if n in weights]
                operands += bias[:1]
        out.append((node.op_type, operands, attrs))
    return out


def _layers_in_forward_order(module: nn.Module, input_size: tuple[int, int]) -> list[tuple[str, nn.Module]]:
    """Our parametric layers in the order one eval forward pass runs them (the exporter's trace order).
    ConfigError when the model has parameters outside Conv / BatchNorm / PReLU / Linear layers (a ViT)."""
    order: list[tuple[str, nn.Module]] = []
    names = {id(m): n for n, m in module.named_modules()}
    hooks = [m.register_forward_pre_hook(_recorder(order, names[id(m)])) for m in module.modules()
             if isinstance(m, _LAYERS)]
    unmappable = [f"{type(m).__name__} {n}" for n, m in module.named_modules()
                  if not isinstance(m, _LAYERS) and any(True for _ in m.parameters(recurse=False)) and n]
    loose = [f"parameter {n}" for n, _ in module.named_parameters(recurse=False)]
    if unmappable or loose:
        for hook in hooks:
            hook.remove()
        raise ConfigError(f"{getattr(module, 'arch', type(module).__name__)}: import maps Conv, BatchNorm, PReLU "
                          f"and Linear layers; this model also has {', '.join((unmappable + loose)[:3])}")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, 3, *input_size))
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    return order


def _recorder(order: list[tuple[str, nn.Module]], name: str) -> Any:
    def hook(layer: nn.Module, _inputs: Any) -> None:
        order.append((name, layer))

    return hook
