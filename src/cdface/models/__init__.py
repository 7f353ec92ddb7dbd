"""Face backbones behind one registry: `create_model(name, embedding_size=512, **kw)`.

Architectures: insightface's IResNet (iresnet18..200), face.evoLVe's IR / IR-SE (ir18..152, ir_se50..152,
the paper's backbone family), insightface's MobileFaceNet, insightface's face ViTs (vit_t .. vit_h and its
WebFace42M variants), AdaFace's IR (adaface_ir18..101, an extra BN per block, BGR), MagFace's IResNet
(magface_iresnet18..100), facenet-pytorch's Inception-ResNet-v1 (160x160), TransFace's ViT (transface_s/b/l),
and `iresnet_tiny` / `vit_tiny` / `transface_tiny` (narrow models for the CPU quickstart and tests).
Every model takes float (N, 3, H, W) images and returns un-normalised embeddings; `model.input_cfg` states its
preprocessing (by default RGB in [-1, 1]) and `InputContract.from_model(model)` applies it to uint8 crops.
"""

from __future__ import annotations

# importing an architecture module registers its models
from cdface.models import (  # noqa: F401
    adaface_ir,
    inception_resnet_v1,
    ir,
    iresnet,
    magface_iresnet,
    mobilefacenet,
    tiny,
    transface_vit,
    vit,
)
from cdface.models.flops import count_flops, count_parameters, model_summary
from cdface.models.input_contract import InputContract
from cdface.models.loading import (
    infer_arch_from_state_dict,
    infer_model_config,
    load_state_dict_strict,
    nearest_layout,
    strip_wrapper_prefixes,
)
from cdface.models.registry import (
    create_model,
    default_input_cfg,
    list_models,
    register_model,
    resolve_model_name,
)

__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "resolve_model_name",
    "default_input_cfg",
    "InputContract",
    "model_summary",
    "count_flops",
    "count_parameters",
    "load_state_dict_strict",
    "infer_arch_from_state_dict",
    "infer_model_config",
    "strip_wrapper_prefixes",
    "nearest_layout",
]
