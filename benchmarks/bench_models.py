"""Backbone throughput: images/s for inference (no grad) and a training step (forward + backward).

Prints one table row per (model, device, precision). CPU by default; pass --device cuda for a GPU
(add --fp16 to also time insightface's autocast mode, and --channels-last for NHWC).

    PYTHONPATH=src python benchmarks/bench_models.py --models iresnet_tiny mobilefacenet iresnet18
"""

from __future__ import annotations

import argparse
import time

import torch

from cdface.models import count_flops, create_model


def _time(fn, warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / iters


def _bench_model(model: torch.nn.Module, x: torch.Tensor, warmup: int, iters: int) -> tuple[float, float]:
    """Seconds per batch for inference (eval, no grad) and for one forward+backward (train mode)."""

    def infer() -> None:
        with torch.no_grad():
            model(x)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).float().square().mean().backward()

    model.eval()
    t_infer = _time(infer, warmup, iters, x.device)
    model.train()
    return t_infer, _time(train_step, warmup, iters, x.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["iresnet_tiny", "mobilefacenet", "iresnet18", "ir18"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--fp16", action="store_true", help="also time fp16=True (autocast; CUDA only)")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = [False, True] if args.fp16 and device.type == "cuda" else [False]

    header = f"{'model':<20} {'device':<6} {'prec':<5} {'GMACs':>6} {'infer img/s':>12} {'train img/s':>12}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        for fp16 in variants:
            torch.manual_seed(0)
            options = {"fp16": fp16} if fp16 else {}
            if args.channels_last:
                options["channels_last"] = True
            model = create_model(name, **options).to(device)
            macs = count_flops(model)
            h, w = model.input_cfg["input_size"]
            x = torch.randn(args.batch_size, 3, h, w, device=device)
            t_infer, t_train = _bench_model(model, x, args.warmup, args.iters)
            prec = "fp16" if fp16 else "fp32"
            print(f"{name:<20} {device.type:<6} {prec:<5} {macs / 1e9:>6.2f} "
                  f"{args.batch_size / t_infer:>12.1f} {args.batch_size / t_train:>12.1f}")


if __name__ == "__main__":
    main()
