"""Inference speed: exact top-k search vs a full sort, and embedding throughput. Prints a table.

    PYTHONPATH=src python benchmarks/inference_speed.py [--gallery 200000] [--queries 1000] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cdface.inference import FaceEmbedder
from cdface.inference.search import topk_search
from cdface.models import create_model


def _timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gallery", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--arch", default="mobilefacenet")
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(args.gallery, args.dim)).astype(np.float32)
    queries = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    rows = []
    for chunk in (16_384, 65_536):
        t = _timed(lambda c=chunk: topk_search(queries, gallery, k=args.k, chunk_size=c, device=args.device))
        rows.append((f"topk_search chunk={chunk}", t, f"{args.queries * args.gallery / t / 1e6:.1f} Mscores/s"))
    q = torch.nn.functional.normalize(torch.from_numpy(queries[:100]), dim=1)
    g = torch.nn.functional.normalize(torch.from_numpy(gallery), dim=1)
    t = _timed(lambda: torch.sort(q @ g.T, dim=1, descending=True))
    rows.append(("full sort baseline (100 queries)", t, f"{100 * args.gallery / t / 1e6:.1f} Mscores/s"))

    model = create_model(args.arch).eval()
    images = rng.integers(0, 256, size=(args.images, 112, 112, 3), dtype=np.uint8)
    for flip in (False, True):
        embedder = FaceEmbedder(model, device=args.device, batch_size=64, flip=flip)
        t = _timed(lambda e=embedder: e.embed(images))
        rows.append((f"embed {args.arch} flip={flip}", t, f"{args.images / t:.1f} images/s"))

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, gallery {args.gallery} x {args.dim}, queries {args.queries}, k {args.k}")
    print(f"| {'what':40s} | {'seconds':>9s} | {'rate':>20s} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 22}|")
    for name, seconds, rate in rows:
        print(f"| {name:40s} | {seconds:9.3f} | {rate:>20s} |")


if __name__ == "__main__":
    main()
