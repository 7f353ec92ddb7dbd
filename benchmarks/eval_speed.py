"""Speed and peak memory of the scoring protocols on synthetic inputs shaped like the real sets.

Each protocol runs in its own child process (so peak RSS is per protocol); only the scoring call is timed,
not the synthetic data generation. Full size: pairs 6,000 x 512; IJB-C 469,375 images / 23,124 templates /
15,658,489 pairs; MegaFace 3,530 probes x 1,000,000 distractors x 512; TinyFace 3,728 probes x 157,871 gallery;
RFW 4 x 6,000 pairs; ERC on 15,658,489 IJB-C-sized pair distances. ``--scale`` shrinks the counts.

    PYTHONPATH=src python benchmarks/eval_speed.py --scale 0.1
    PYTHONPATH=src python benchmarks/eval_speed.py --protocols pairs,ijb --repeat 3   # min time, max RSS

``--exact`` times the bit-exact float64 IJB path instead of the default float32 block-Gram one.
``--device cuda`` moves the features to the GPU first (not timed): the fast paths then score there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

DIM = 512


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _on(x: np.ndarray, device: str):
    """``x`` itself on the CPU, else a torch tensor on ``device`` (the scoring functions follow their input)."""
    if device == "cpu":
        return x
    import torch

    return torch.from_numpy(x).to(device)


def _timed(fn, device: str):
    """(result, seconds) of ``fn()``, the device's queue drained before and after."""
    sync = None
    if device != "cpu":
        import torch

        sync = torch.cuda.synchronize
        sync()
    t = time.perf_counter()
    res = fn()
    if sync is not None:
        sync()
    return res, time.perf_counter() - t


def bench_pairs(scale: float, exact: bool = False, device: str = "cpu") -> dict:
    from cdface.eval.verification import evaluate_pairs

    rng = np.random.default_rng(0)
    n = 6000  # always full size: it is cheap
    a = _unit(rng.standard_normal((n, DIM), dtype=np.float32))
    same = rng.random(n) < 0.5
    b = np.where(same[:, None], a + 0.08 * rng.standard_normal((n, DIM), dtype=np.float32),
                 rng.standard_normal((n, DIM), dtype=np.float32))
    emb = np.empty((2 * n, DIM), np.float32)
    emb[0::2], emb[1::2] = a, b
    emb = _on(emb, device)
    res, seconds = _timed(lambda: evaluate_pairs(emb, same), device)
    return {"size": f"{n} pairs", "seconds": seconds, "metric": f"acc={res.accuracy:.4f}"}


def bench_ijb(scale: float, exact: bool = False, device: str = "cpu") -> dict:
    from cdface.eval.ijb import ijb_verification

    rng = np.random.default_rng(0)
    n_img, n_tmpl, n_pairs = int(469375 * scale), max(4, int(23124 * scale)), int(15658489 * scale)
    n_subj = max(2, n_tmpl // 7)
    subj_of_tmpl = rng.integers(0, n_subj, n_tmpl)
    tmpl = np.sort(rng.integers(0, n_tmpl, n_img))
    medias = tmpl * 10 + rng.integers(0, 4, n_img)  # several images per media -> averaging happens
    centres = rng.standard_normal((n_subj, DIM), dtype=np.float32)
    # image noise 6x the identity signal: ~20 images per template then give IJB-C-like TARs (not all 1.0)
    feats = centres[subj_of_tmpl[tmpl]] + 6.0 * rng.standard_normal((n_img, DIM), dtype=np.float32)
    faceness = rng.uniform(0.5, 1.0, n_img).astype(np.float32)
    pairs = rng.integers(0, n_tmpl, (n_pairs, 2))
    n_gen = max(1, n_pairs // 800)  # IJB-C has 19,557 genuine pairs in 15.6M
    mates = np.flatnonzero(subj_of_tmpl[:, None] == subj_of_tmpl[None, : min(n_tmpl, 2000)])
    pick = rng.integers(0, mates.size, n_gen)
    pairs[:n_gen, 0], pairs[:n_gen, 1] = np.divmod(mates[pick], min(n_tmpl, 2000))
    labels = (subj_of_tmpl[pairs[:, 0]] == subj_of_tmpl[pairs[:, 1]]).astype(np.int64)
    feats = _on(feats, device)  # faceness, ids and pairs come from metadata files: they stay on the host
    res, seconds = _timed(lambda: ijb_verification(feats, faceness, tmpl, medias, pairs, labels, exact=exact), device)
    return {"size": f"{n_img} img / {n_tmpl} tmpl / {n_pairs} pairs", "seconds": seconds,
            "metric": "TAR@FAR " + " ".join(f"{k:g}:{v!r}" for k, v in res.tar_at_far.items())}


def bench_megaface(scale: float, exact: bool = False, device: str = "cpu") -> dict:
    from cdface.eval.megaface import megaface_evaluate

    rng = np.random.default_rng(0)
    n_p, n_d = max(20, int(3530 * min(1.0, scale * 10))), max(100, int(1_000_000 * scale))
    labels = np.repeat(np.arange(n_p // 40 + 1), 40)[:n_p]
    centres = rng.standard_normal((labels.max() + 1, DIM), dtype=np.float32)
    probe = centres[labels] + 1.2 * rng.standard_normal((n_p, DIM), dtype=np.float32)
    dis = rng.standard_normal((n_d, DIM), dtype=np.float32)
    sizes = tuple(s for s in (10, 100, 1000, 10000, 100000) if s < n_d)
    probe, dis = _on(probe, device), _on(dis, device)
    (ident, verif), seconds = _timed(lambda: megaface_evaluate(probe, labels, dis, distractor_sizes=sizes), device)
    return {"size": f"{n_p} probes x {n_d} distractors", "seconds": seconds,
            "metric": f"rank1={ident.rank1:.4f} TAR@1e-6={verif.tar_at_far[1e-6]:.4f}"}


def bench_tinyface(scale: float, exact: bool = False) -> dict:
    """TinyFace's shape: 3,728 probes, 4,443 gallery mates of 2,570 identities, 153,428 distractors."""
    from cdface.eval.identification import identification

    rng = np.random.default_rng(0)
    n_id, n_p, n_m, n_d = max(10, int(2570 * scale)), max(20, int(3728 * scale)), max(10, int(4443 * scale)), \
        max(100, int(153428 * scale))
    centres = rng.standard_normal((n_id, DIM), dtype=np.float32)
    lp, lm = rng.integers(0, n_id, n_p), np.r_[np.arange(n_id), rng.integers(0, n_id, max(0, n_m - n_id))][:n_m]
    # low-resolution probes: noise 4x the identity signal, so that rank-1 is far from 1 (TinyFace-like)
    probe = _unit(centres[lp] + 4.0 * rng.standard_normal((n_p, DIM), dtype=np.float32))
    gallery = np.concatenate([_unit(centres[lm] + 0.8 * rng.standard_normal((n_m, DIM), dtype=np.float32)),
                              _unit(rng.standard_normal((n_d, DIM), dtype=np.float32))])
    lg = np.r_[lm, np.full(n_d, -100)]
    t = time.perf_counter()
    res = identification(probe, lp, gallery, lg, ranks=(1, 5, 20))
    return {"size": f"{n_p} probes x {n_m + n_d} gallery", "seconds": time.perf_counter() - t,
            "metric": " ".join(f"rank{k}={v:.4f}" for k, v in res.cmc.items())}


def bench_rfw(scale: float, exact: bool = False) -> dict:
    """RFW: 4 races x 6,000 pairs (always full size: it is cheap)."""
    from cdface.eval.rfw import RACES, evaluate_rfw

    rng = np.random.default_rng(0)
    emb, same = {}, {}
    for k, race in enumerate(RACES):
        a = _unit(rng.standard_normal((6000, DIM), dtype=np.float32))
        s = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
        noise = 0.9 + 0.1 * k  # a different difficulty per race, so SER is finite and > 1
        b = np.where(s[:, None], a + noise * rng.standard_normal((6000, DIM), dtype=np.float32) / np.sqrt(DIM) * 8,
                     rng.standard_normal((6000, DIM), dtype=np.float32))
        e = np.empty((12000, DIM), np.float32)
        e[0::2], e[1::2] = a, b
        emb[race], same[race] = e, s
    t = time.perf_counter()
    res = evaluate_rfw(emb, same)
    return {"size": "4 x 6000 pairs", "seconds": time.perf_counter() - t,
            "metric": f"mean={res.mean_accuracy:.4f} std={res.std_accuracy:.4f} SER={res.ser:.3f}"}


def bench_erc(scale: float, exact: bool = False) -> dict:
    """Error-versus-reject on IJB-C-sized template pairs: 15,658,489 distances, 23,124 template qualities."""
    from cdface.eval.erc import error_versus_reject

    rng = np.random.default_rng(0)
    n_t, n_pairs = max(10, int(23124 * scale)), max(1000, int(15658489 * scale))
    quality = rng.uniform(0, 1, n_t)
    pairs = rng.integers(0, n_t, (n_pairs, 2))
    same = rng.random(n_pairs) < 1 / 800
    q = np.minimum(quality[pairs[:, 0]], quality[pairs[:, 1]])
    # genuine distances shrink with quality, impostors ~0.5: a quality that predicts errors
    dist = np.where(same, rng.normal(0.35 - 0.15 * q, 0.05), rng.normal(0.5, 0.03, n_pairs))
    t = time.perf_counter()
    res = error_versus_reject(None, pairs, same, quality, fmr_levels=(1e-3, 1e-4), distances=dist)
    return {"size": f"{n_pairs} pairs / {n_t} qualities", "seconds": time.perf_counter() - t,
            "metric": f"FNMR@1e-3 {res.fnmr[1e-3][0]:.4f}->{res.fnmr[1e-3][-1]:.4f} AUC={res.auc[1e-3]:.4f}"}


BENCHES = {"pairs": bench_pairs, "ijb": bench_ijb, "megaface": bench_megaface, "tinyface": bench_tinyface,
           "rfw": bench_rfw, "erc": bench_erc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", choices=sorted(BENCHES), help="run one protocol in this process")
    parser.add_argument("--protocols", default=",".join(BENCHES), help="comma-separated subset to run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per protocol (fresh process each)")
    parser.add_argument("--exact", action="store_true", help="IJB: the bit-exact float64 path")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: features on the GPU (fast paths)")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(BENCHES[args.only](args.scale, args.exact, args.device)))
        return
    rows = []
    for name in [p.strip() for p in args.protocols.split(",") if p.strip()]:
        times, rss, res = [], [], {}
        for _ in range(max(1, args.repeat)):
            cmd = [sys.executable, __file__, "--only", name, "--scale", str(args.scale), "--device", args.device]
            proc = subprocess.Popen(cmd + (["--exact"] if args.exact else []), stdout=subprocess.PIPE,
                                    env=os.environ.copy())
            out = proc.stdout.read() if proc.stdout else b""
            _, status, usage = os.wait4(proc.pid, 0)
            if status != 0:
                break
            res = json.loads(out.decode().strip().splitlines()[-1])
            times.append(res["seconds"])
            rss.append(usage.ru_maxrss / 1024**2)
        if not times:
            rows.append((name, "failed", float("nan"), float("nan"), ""))
            continue
        rows.append((name, res["size"], min(times), max(rss), res["metric"]))
    print(f"{'protocol':<10} {'size':<44} {'min time (s)':>12} {'peak RSS (GB)':>14}  metric")
    for name, size, sec, peak, metric in rows:
        print(f"{name:<10} {size:<44} {sec:>12.3f} {peak:>14.2f}  {metric}")


if __name__ == "__main__":
    main()
