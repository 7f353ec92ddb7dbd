"""Per-GPU training memory and a compute bound on speed for insightface's ViTs, estimated on a CPU.

    PYTHONPATH=src python benchmarks/vit_memory.py [--models vit_t_dp005_mask0,...] [--batches 128,512]

Memory per GPU = the formula of cdface.parallel.memory (sharded Partial FC head + the replicated backbone's
float32 weights, gradients and AdamW moments) + activations saved for backward. The activations are
measured, not guessed: one training-mode forward under autocast (bf16, the shipped configs' precision) at
batch 2 and 4 on the CPU with `torch.autograd.graph.saved_tensors_hooks`, counting each saved storage once
(parameters excluded: they are in the formula); per image = the difference / 2, so batch-independent saves
(bf16 weight copies) are the intercept. With gradient checkpointing a block keeps only its float32 input, and
one block's saved tensors come back while it is recomputed. Not included: the backward's transient buffers
(about one block's activations), the CUDA context and allocator slack (~0.5-1 GiB), the data loader's
pinned batches. On CUDA the attention core saves q, k, v, its output and a logsumexp (efficient/flash
kernels); the CPU kernel used here saves the same sizes (no N x N matrix), so the count carries over.

Speed: the backbone's MACs of one image (`cdface models`, insightface's convention) x 2 FLOPs x 3 (forward +
backward; 4 with checkpointing's second forward), with the blocks' share scaled by the kept-token fraction
when masking, plus the head's 2 x 3 x (global batch x sampled centres x D) on each GPU. The images/s column
is that work at a GPU's dense bf16 peak (--peak-tflops, default 989: H100/H200 SXM), an upper
bound no real run reaches; insightface's README reports ~35,000 / ~25,000 / ~13,800 samples/s for ViT-T / S /
B on 64 GPUs (GPU not stated). Measure on a GPU with benchmarks/train_throughput.py --model vit_b_dp005_mask_005.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from cdface.models import create_model, model_summary
from cdface.models.vit import VisionTransformer
from cdface.parallel.memory import format_bytes, head_memory

WEBFACE42M_CLASSES = 2_059_906
EMBEDDING = 512  # the models' default embedding size, the head's D


@contextmanager
def _count_saved(model: torch.nn.Module, totals: dict[str, int]) -> Iterator[None]:
    """Add the bytes of every storage saved for backward to totals[region] ("blocks" inside a block, else
    "other"); each storage is counted once and parameters not at all."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    region = ["other"]
    hooks = []
    for block in getattr(model, "blocks", []):
        hooks.append(block.register_forward_pre_hook(lambda *_: region.__setitem__(0, "blocks")))
        hooks.append(block.register_forward_hook(lambda *_: region.__setitem__(0, "other")))

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in seen and ptr not in params:
            seen.add(ptr)
            totals[region[0]] = totals.get(region[0], 0) + storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
    finally:
        for hook in hooks:
            hook.remove()


def saved_bytes(name: str, batch: int, dtype: torch.dtype | None) -> dict[str, int]:
    """Bytes saved for backward by one training-mode forward of `name` at `batch`, split blocks / other."""
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(batch, 3, 112, 112)
    totals: dict[str, int] = {}
    autocast = torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    with _count_saved(model, totals), autocast:
        model(x)
    return totals


def activation_model(name: str, dtype: torch.dtype | None) -> dict[str, float]:
    """Per-image slope and intercept of the saved bytes (blocks and the rest), from batches 2 and 4."""
    a, b = saved_bytes(name, 2, dtype), saved_bytes(name, 4, dtype)
    out = {}
    for region in ("blocks", "other"):
        slope = (b.get(region, 0) - a.get(region, 0)) / 2
        out[f"{region}_per_image"] = slope
        out[f"{region}_fixed"] = a.get(region, 0) - 2 * slope
    return out


def activations(name: str, act: dict[str, float], batch: int, checkpointing: bool) -> float:
    if not checkpointing:
        return (act["blocks_per_image"] + act["other_per_image"]) * batch + act["blocks_fixed"] + act["other_fixed"]
    with torch.device("meta"):
        model = create_model(name)
    assert isinstance(model, VisionTransformer)
    depth = len(model.blocks)
    kept = int(model.num_patches * (1 - model.mask_ratio))
    inputs = depth * batch * kept * model.embed_dim * 4  # each block's float32 input
    one_block = (act["blocks_per_image"] * batch + act["blocks_fixed"]) / depth
    return inputs + one_block + act["other_per_image"] * batch + act["other_fixed"]


def train_flops_per_image(name: str, checkpointing: bool) -> float:
    """2 x MACs x (3, or 4 with checkpointing); with masking the blocks see only the kept tokens: their
    linears scale with the kept fraction, their attention with its square."""
    summary = model_summary(name)
    with torch.device("meta"):
        model = create_model(name)
    d, n, depth = model.embed_dim, model.num_patches, len(model.blocks)
    kept = int(n * (1 - model.mask_ratio)) / n
    linears, attention = depth * n * 12 * d * d, depth * 2 * n * n * d
    macs = summary["macs"] - linears * (1 - kept) - attention * (1 - kept * kept)
    return 2.0 * macs * (4.0 if checkpointing else 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_t_dp005_mask0,vit_s_dp005_mask_0,vit_b_dp005_mask_005")
    parser.add_argument("--batches", default="128,512", help="batches per GPU")
    parser.add_argument("--world", type=int, default=8, help="GPUs the head is sharded over")
    parser.add_argument("--sample-rate", type=float, default=0.3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of one GPU")
    parser.add_argument("--fp32", action="store_true", help="activations in float32 (default: bf16 autocast)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = None if args.fp32 else torch.bfloat16
    print(f"host: {platform.machine()} {platform.processor() or ''} torch {torch.__version__}; "
          f"WebFace42M head ({WEBFACE42M_CLASSES:,} classes) over {args.world} GPUs, r={args.sample_rate}, "
          f"AdamW, activations {'fp32' if args.fp32 else 'bf16 autocast'}")
    header = ("model", "batch/GPU", "ckpt", "params+grad+AdamW", "head", "activations", "total",
              "TFLOP/step", "img/s at peak")
    rows = []
    for name in args.models.split(","):
        act = activation_model(name, dtype)
        for batch in (int(b) for b in args.batches.split(",")):
            for ckpt in (False, True):
                params = model_summary(name)["params"]
                head = head_memory(WEBFACE42M_CLASSES, args.world, args.sample_rate, batch * args.world,
                                   EMBEDDING, optimizer="adamw", backbone_params=params)
                head_only = head.total - head.backbone
                acts = activations(name, act, batch, ckpt)
                head_flops = 6.0 * head.batch * head.sampled_classes * EMBEDDING
                step_flops = train_flops_per_image(name, ckpt) * batch + head_flops
                rows.append((name, str(batch), "on" if ckpt else "off", format_bytes(head.backbone),
                             format_bytes(head_only), format_bytes(int(acts)),
                             format_bytes(int(head.total + acts)), f"{step_flops / 1e12:.2f}",
                             f"{args.peak_tflops * 1e12 * batch / step_flops:,.0f}"))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
