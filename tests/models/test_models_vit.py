"""insightface's face ViT: its state_dict layout written out from `backbones/vit.py`, its `get_model` settings,
MAC and parameter counts against its published GFLOPs, and forward passes (eval, masking, stochastic depth,
checkpointing, precision flags) against a slow functional re-implementation that reads the state_dict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cdface.errors import ConfigError
from cdface.models import create_model, load_state_dict_strict, model_summary
from cdface.models.vit import VisionTransformer, drop_path

# insightface arcface_torch backbones/__init__.py get_model: embed_dim, depth, num_heads, drop_path_rate, mask_ratio
INSIGHTFACE_GET_MODEL = {
    "vit_t": (256, 12, 8, 0.1, 0.1),
    "vit_t_dp005_mask0": (256, 12, 8, 0.05, 0.0),
    "vit_s": (512, 12, 8, 0.1, 0.1),
    "vit_s_dp005_mask_0": (512, 12, 8, 0.05, 0.0),
    "vit_b": (512, 24, 8, 0.1, 0.1),
    "vit_b_dp005_mask_005": (512, 24, 8, 0.05, 0.05),
    "vit_l_dp005_mask_005": (768, 24, 8, 0.05, 0.05),
    "vit_h": (1024, 48, 8, 0.1, 0.0),
}
PATCHES = 144  # 112 // 9 = 12 patches a side


def insightface_layout(dim: int, depth: int, embedding: int = 512) -> list[tuple[str, tuple[int, ...]]]:
    """The state_dict of insightface's VisionTransformer(img 112, patch 9, mlp_ratio 4, qkv_bias False,
    norm_layer "ln"), in its order: own parameters, then patch_embed, blocks (Block registers norm1 and norm2
    before attn and mlp), norm, feature = [Linear(no bias), BatchNorm1d, Linear(no bias), BatchNorm1d]."""
    bn = lambda p, n: [(f"{p}.weight", (n,)), (f"{p}.bias", (n,)), (f"{p}.running_mean", (n,)),  # noqa: E731
                       (f"{p}.running_var", (n,)), (f"{p}.num_batches_tracked", ())]
    keys = [("pos_embed", (1, PATCHES, dim)), ("mask_token", (1, 1, dim)),
            ("patch_embed.proj.weight", (dim, 3, 9, 9)), ("patch_embed.proj.bias", (dim,))]
    for i in range(depth):
        b = f"blocks.{i}"
        keys += [(f"{b}.norm1.weight", (dim,)), (f"{b}.norm1.bias", (dim,)),
                 (f"{b}.norm2.weight", (dim,)), (f"{b}.norm2.bias", (dim,)),
                 (f"{b}.attn.qkv.weight", (3 * dim, dim)),
                 (f"{b}.attn.proj.weight", (dim, dim)), (f"{b}.attn.proj.bias", (dim,)),
                 (f"{b}.mlp.fc1.weight", (4 * dim, dim)), (f"{b}.mlp.fc1.bias", (4 * dim,)),
                 (f"{b}.mlp.fc2.weight", (dim, 4 * dim)), (f"{b}.mlp.fc2.bias", (dim,))]
    keys += [("norm.weight", (dim,)), ("norm.bias", (dim,)), ("feature.0.weight", (dim, dim * PATCHES))]
    keys += bn("feature.1", dim) + [("feature.2.weight", (embedding, dim))] + bn("feature.3", embedding)
    return keys


def _meta(name: str, **kw) -> VisionTransformer:
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize("name", ["vit_t", "vit_s", "vit_b", "vit_l", "vit_h"])
def test_layout_keys_order_and_shapes_equal_insightface(name: str) -> None:
    dim, depth = INSIGHTFACE_GET_MODEL.get(name, INSIGHTFACE_GET_MODEL["vit_l_dp005_mask_005"])[:2]
    state = _meta(name).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == insightface_layout(dim, depth)


@pytest.mark.parametrize("name", sorted(INSIGHTFACE_GET_MODEL))
def test_registered_settings_are_insightface_get_model(name: str) -> None:
    dim, depth, heads, dp_rate, ratio = INSIGHTFACE_GET_MODEL[name]
    model = _meta(name)
    assert model.embed_dim == dim and len(model.blocks) == depth
    assert all(block.attn.num_heads == heads for block in model.blocks)
    rates = [block.drop_path.p for block in model.blocks]
    assert rates == pytest.approx(torch.linspace(0, dp_rate, depth).tolist(), abs=1e-7)  # stochastic depth rule
    assert model.mask_ratio == ratio
    assert model.gradient_checkpointing is False  # a config option (insightface: on for vit_b/l/h)
    assert model.input_cfg["input_size"] == (112, 112) and model.input_cfg["color"] == "RGB"
    if name == "vit_l_dp005_mask_005":
        assert model.arch == "vit_l"  # insightface has no other L; the alias names the same model


@pytest.mark.parametrize("name,gflops", [("vit_t", 1.5), ("vit_s", 5.7), ("vit_b", 11.4), ("vit_l", 25.3)])
def test_macs_and_params_by_formula_and_insightface_table(name: str, gflops: float) -> None:
    dim, depth = INSIGHTFACE_GET_MODEL.get(name, INSIGHTFACE_GET_MODEL["vit_l_dp005_mask_005"])[:2]
    n, e = PATCHES, 512
    # patch conv; per block qkv + proj + fc1 + fc2 linears and q k^T, attn v (insightface's extra_gflops); head
    macs = n * dim * 3 * 81 + depth * (n * 12 * dim * dim + 2 * n * n * dim) + n * dim * dim + dim * e
    # pos_embed, mask_token, patch conv; per block 2 LayerNorms, qkv, proj, fc1, fc2; norm; head (BN: 2 each)
    params = n * dim + dim + dim * 243 + dim + depth * (12 * dim * dim + 10 * dim) + 2 * dim + n * dim * dim \
        + 2 * dim + dim * e + 2 * e
    summary = model_summary(name)
    assert summary["macs"] == macs
    assert summary["params"] == summary["trainable_params"] == params
    assert round(summary["gflops"], 1) == gflops  # arcface_torch README: ViT-T 1.5, S 5.7, B 11.4, L 25.3 GFLOPs


# ---- the functional reference: insightface's maths written as plain calls on the state_dict ----

def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            elif key.endswith(("running_mean", "bias")) or value.dim() == 1:
                value.copy_(torch.randn(value.shape, generator=gen) * 0.1 + (1.0 if key.endswith("weight") else 0.0))
            else:
                value.copy_(torch.randn(value.shape, generator=gen) / value[0].numel() ** 0.5)


def _reference_blocks(sd: dict, x: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """Pre-norm blocks on (B, N, D) tokens: explicit softmax(q k^T * (D/H)^-0.5) v, ReLU6 MLP."""
    b, n, d = x.shape
    hd = d // heads
    for i in range(depth):
        p = f"blocks.{i}"
        h = F.layer_norm(x, (d,), sd[f"{p}.norm1.weight"], sd[f"{p}.norm1.bias"], 1e-5)
        qkv = (h @ sd[f"{p}.attn.qkv.weight"].T).reshape(b, n, 3, heads, hd)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # (B, H, N, hd)
        attn = torch.softmax((q @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        x = x + out @ sd[f"{p}.attn.proj.weight"].T + sd[f"{p}.attn.proj.bias"]
        h = F.layer_norm(x, (d,), sd[f"{p}.norm2.weight"], sd[f"{p}.norm2.bias"], 1e-5)
        h = torch.clamp(h @ sd[f"{p}.mlp.fc1.weight"].T + sd[f"{p}.mlp.fc1.bias"], 0.0, 6.0)
        x = x + h @ sd[f"{p}.mlp.fc2.weight"].T + sd[f"{p}.mlp.fc2.bias"]
    return F.layer_norm(x, (d,), sd["norm.weight"], sd["norm.bias"], 1e-5)


def _reference_tokens(sd: dict, images: torch.Tensor) -> torch.Tensor:
    """Patch i (row-major over the 12 x 12 grid) = conv of pixels [9r, 9r+9) x [9c, 9c+9), plus pos_embed."""
    patches = images[:, :, :108, :108].unfold(2, 9, 9).unfold(3, 9, 9)  # (B, 3, 12, 12, 9, 9)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(images.shape[0], PATCHES, 3 * 81)
    w = sd["patch_embed.proj.weight"]
    return patches @ w.reshape(w.shape[0], -1).T + sd["patch_embed.proj.bias"] + sd["pos_embed"]


def _reference_head(sd: dict, features: torch.Tensor) -> torch.Tensor:
    def bn(p: str, x: torch.Tensor) -> torch.Tensor:
        return (x - sd[f"{p}.running_mean"]) / torch.sqrt(sd[f"{p}.running_var"] + 2e-5) * sd[f"{p}.weight"] \
            + sd[f"{p}.bias"]

    return bn("feature.3", bn("feature.1", features @ sd["feature.0.weight"].T) @ sd["feature.2.weight"].T)


def _tiny(**kw) -> VisionTransformer:
    return VisionTransformer(embedding_size=16, embed_dim=24, depth=2, num_heads=3, **kw)


def test_eval_forward_equals_functional_reference() -> None:
    torch.manual_seed(0)
    model = _tiny(drop_path_rate=0.3, mask_ratio=0.2).eval()  # both are training-only: no effect in eval
    _randomise(model, 1)
    sd = model.state_dict()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        out = model(x)
        tokens = _reference_blocks(sd, _reference_tokens(sd, x), 2, 3)
        expected = _reference_head(sd, tokens.reshape(3, -1))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_a_full_size_insightface_state_dict_loads_strictly_and_embeds_in_float32() -> None:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in insightface_layout(256, 12):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.02
    model = load_state_dict_strict(create_model("vit_t"), {f"module.{k}": v for k, v in state.items()}, "vit_t.pth")
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_masking_keeps_a_random_share_and_fills_the_rest_with_the_mask_token() -> None:
    torch.manual_seed(0)
    model = _tiny(mask_ratio=0.25).train()
    _randomise(model, 2)
    sd = model.state_dict()
    x = torch.randn(4, 3, 112, 112)
    with torch.no_grad():
        feats = model.forward_features(x).reshape(4, PATCHES, 24)
        tokens = _reference_tokens(sd, x)
    is_mask = (feats == sd["mask_token"]).all(dim=-1)
    kept_count = int(PATCHES * (1 - 0.25))  # insightface's len_keep
    assert is_mask.sum(dim=1).tolist() == [PATCHES - kept_count] * 4
    assert len({tuple(row.nonzero().flatten().tolist()) for row in is_mask}) == 4  # per-sample draws
    for i in range(4):
        kept = (~is_mask[i]).nonzero().flatten()
        # the kept patches attend only to each other (order does not matter: no position beyond pos_embed)
        expected = _reference_blocks(sd, tokens[i : i + 1, kept], 2, 3)[0]
        torch.testing.assert_close(feats[i, kept], expected, rtol=1e-4, atol=1e-5)
    model.mask_ratio = 0.0
    with torch.no_grad():
        assert not (model.forward_features(x).reshape(4, PATCHES, 24) == sd["mask_token"]).all(-1).any()


def test_drop_path_drops_whole_samples_and_rescales_the_kept() -> None:
    torch.manual_seed(0)
    x = torch.randn(4000, 3) + 5.0
    out = drop_path(x, 0.25, training=True)
    kept = (out != 0).all(dim=1)
    assert ((out == 0).all(dim=1) | kept).all()  # all or nothing per sample
    torch.testing.assert_close(out[kept], x[kept] / 0.75)
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(drop_path(x, 0.25, training=False), x)
    assert torch.equal(drop_path(x, 1.0, training=True), torch.zeros_like(x))


def test_gradient_checkpointing_gives_the_same_step_with_masking_and_drop_path() -> None:
    model = _tiny(drop_path_rate=0.5, mask_ratio=0.1).train()
    x = torch.randn(4, 3, 112, 112)
    results = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        torch.manual_seed(3)
        out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a["mask_token"].abs().sum() > 0
    for key in grads_a:
        torch.testing.assert_close(grads_b[key], grads_a[key], rtol=1e-4, atol=1e-6)


def test_precision_flags_and_bad_options() -> None:
    torch.manual_seed(0)
    base = _tiny().eval()
    x = torch.randn(2, 3, 112, 112)
    for flags in ({"fp16": True}, {"bf16": True}):  # CUDA-only, as iresnet's fp16: CPU numbers stay float32
        variant = _tiny(**flags).eval()
        variant.load_state_dict(base.state_dict())
        with torch.no_grad():
            assert torch.equal(variant(x), base(x))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's precision: bf16
        out = base(x)
    assert out.dtype == torch.float32  # the feature head runs in float32, as insightface's
    with torch.no_grad():
        torch.testing.assert_close(out, base(x), rtol=0.1, atol=0.1 * float(out.abs().max()))
    with pytest.raises(ConfigError, match="exclusive"):
        create_model("vit_t", fp16=True, bf16=True)
    with pytest.raises(ConfigError, match="mask_ratio"):
        create_model("vit_t", mask_ratio=1.0)
    with pytest.raises(ConfigError, match="divisible"):
        VisionTransformer(embed_dim=30, num_heads=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fp16/bf16 flags act on CUDA tensors only")
@pytest.mark.parametrize("flag", ["fp16", "bf16"])
def test_cuda_half_precision_flags_stay_close_to_float32(flag: str) -> None:
    torch.manual_seed(0)
    base = _tiny().cuda().eval()
    variant = _tiny(**{flag: True}).cuda().eval()
    variant.load_state_dict(base.state_dict())
    x = torch.randn(4, 3, 112, 112, device="cuda")
    with torch.no_grad():
        out, ref = variant(x), base(x)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05 * float(ref.abs().max()))


@pytest.mark.parametrize("training,checkpointing", [(False, False), (True, False), (True, True)])
def test_torch_compile_traces_without_graph_breaks(training: bool, checkpointing: bool) -> None:
    model = _tiny(drop_path_rate=0.2, mask_ratio=0.1, gradient_checkpointing=checkpointing).train(training)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 112, 112))
    assert explanation.graph_break_count == 0, explanation.break_reasons
