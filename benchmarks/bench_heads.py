"""Forward+backward time of every margin head, the CD loss and the miners; prints a table.

PYTHONPATH=src python benchmarks/bench_heads.py [--batch 512] [--classes 20000] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from cdface.heads import MARGINS, create_head
from cdface.losses import ClosenessDiversityLoss
from cdface.miners import EasyHardMiner, hard_negative_centres, score_threshold


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--classes", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows: list[tuple[str, float]] = []

    def add(what: str, fn) -> None:
        rows.append((what, _time(fn, device, args.repeats)))

    x = torch.randn(args.batch, args.dim, device=device, requires_grad=True)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    for name in MARGINS:
        head = create_head(name, args.dim, args.classes).to(device)

        def step(head=head) -> None:
            out = head(x, y)
            loss = F.cross_entropy(out.logits, y)
            if out.aux_loss is not None:
                loss = loss + out.aux_loss
            loss.backward()

        add(f"head {name} fwd+bwd", step)

    easy = torch.randn(64, 7, args.dim, device=device, requires_grad=True)
    hard = torch.randn(64, 1, args.dim, device=device, requires_grad=True)
    centres = torch.randn(20_000, args.dim, device=device)
    cd = ClosenessDiversityLoss()
    add("CD loss fwd+bwd (K=64, P=20000)", lambda: cd(easy, hard, centres).backward())
    cosine = torch.rand(args.batch, args.classes, device=device)
    classes = torch.unique(y)[:64]
    add("hard negatives (K=64, NP=500)", lambda: hard_negative_centres(cosine, y, classes))

    rng = np.random.default_rng(0)
    n = 5_800_000
    scores = rng.random(n, dtype=np.float32)
    labels = np.sort(rng.integers(0, 85_000, n))
    bounds = np.searchsorted(labels, np.arange(85_001))
    class_to_indices = [np.arange(bounds[c], bounds[c + 1]) for c in range(85_000)]
    miner = EasyHardMiner()
    picked = rng.choice(85_000, 64, replace=False)
    add("score_threshold (N=5.8M)", lambda: score_threshold(scores, rng=rng))
    add("EasyHardMiner (K=64)", lambda: miner(scores, class_to_indices, picked, 0.3, rng))

    print(f"device={device} batch={args.batch} classes={args.classes} dim={args.dim}")
    print(f"{'what':<40} {'ms':>10}")
    for what, ms in rows:
        print(f"{what:<40} {ms:>10.2f}")


if __name__ == "__main__":
    main()
