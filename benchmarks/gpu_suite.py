"""The GPU proof suite (issue 17): every GPU figure of cdface in one command, one JSON and one Markdown table.

    PYTHONPATH=src python benchmarks/gpu_suite.py --out benchmarks/results --budget-s 480
    PYTHONPATH=src python benchmarks/gpu_suite.py --dry-run            # every part, tiny, on the CPU

Parts, in the order they run (the most wanted first, so that the time budget cuts the least wanted):

* ``train_*``: training throughput of stage 1 (ArcFace) and stage 2 (closeness & diversity) side by side
  in alternating rounds, through ``benchmarks/train_throughput.py``'s ``measure`` (the trainer's step on
  random device images): iresnet100 and ir100, batch 512, bf16, channels_last, 85,742 classes, K=64, NE=7,
  NH=1, NP=500, interval 5, with and without ``torch.compile``. Targets: stage 2 >= 2,000 samples/s and
  CD/ArcFace >= 0.80 (reference, H200: the paper's code 1,109 samples/s; insightface r100 fp16 + Partial FC
  1,695).
* ``train_data_*``: the same with real data loading: a RecordIO of 112x112 JPEGs is written first, then the
  trainer's dataset (``build_training_data``) and a DataLoader built as ``fit`` builds it decode it with
  ``cores - 2`` workers per stage.
* ``eval``: pairs, IJB-C 1:1 at full size (target < 2 s) and MegaFace 3,530 x 1M (target < 10 s) with the
  features on the GPU, through ``benchmarks/eval_speed.py``'s generators and timers.
* ``extract``: ``FaceEmbedder`` images/s, iresnet100 and iresnet50, bf16, batch 512, flip included
  (uint8 host images in, normalised host embeddings out).
* ``head_1m``: a 1M-class ``ShardedMarginHead`` step (Partial FC 0.1, one process = world size 1): step time
  and peak memory, then with the method's CD branch (``head.hard_negatives`` + ``ClosenessDiversityLoss``).
  The memory model's figure (``cdface.parallel.head_memory``) is printed next to the measured peak.
* ``sync``: steady-state stage-2 steps under ``torch.cuda.set_sync_debug_mode("warn")``: the synchronising
  calls warned per step (target 0 outside logging/checkpoint steps), and on every device the host reads
  (``.item()``, ``.cpu()``, ``bool()``...) the step's Python code makes, counted with a TorchFunctionMode.
  Warnings raised on autograd's backward thread do not reach Python's warnings and are not counted.

Every row gets the peak GPU memory of its own measurement (``torch.cuda.max_memory_allocated``, reset first).
Each part runs in its own process with its own timeout, clipped to what is left of ``--budget-s``; its rows
are written as they are measured, so a part that times out keeps what it had, and the JSON and Markdown files
are rewritten after every part. Files: ``<out>/gpu_suite_<device>_<date>.{json,md}`` (``dryrun_...`` for
``--dry-run``). Needs torch, numpy and Pillow (simplejpeg optional); cdface comes from ``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The GPU configuration and the dry run's (tiny, CPU, every code path).
SIZES = {
    "gpu": {
        "train": ["--steps", "10", "--rounds", "4", "--warmup", "6", "--channels-last"],
        "data_images": 30_720,
        "data_images_per_class": 64,
        "eval_scale": 1.0,
        "extract": {"models": ["iresnet100", "iresnet50"], "batch": 512, "images": 4096, "precision": "bf16"},
        "head": {"classes": 1_000_000, "batch": 512, "dim": 512, "k": 64, "ne": 7, "nh": 1, "np": 500, "steps": 20},
        "sync_train": ["--warmup", "6", "--channels-last"],
        "sync_steps": 10,
    },
    "dry": {
        "train": [
            "--model", "iresnet_tiny", "--batch", "8", "--classes", "200", "--images-per-class", "8",
            "--embedding", "32", "--k", "1", "--np", "20", "--interval", "2", "--steps", "2", "--rounds", "1",
            "--warmup", "3",
        ],
        "data_images": 256,
        "data_images_per_class": 8,
        "eval_scale": 0.001,
        "extract": {"models": ["iresnet_tiny"], "batch": 8, "images": 16, "precision": "fp32"},
        "head": {"classes": 5_000, "batch": 16, "dim": 32, "k": 2, "ne": 7, "nh": 1, "np": 20, "steps": 2},
        "sync_train": [],  # the dry "train" sizes
        "sync_steps": 2,
    },
}


@dataclass
class Part:
    name: str
    kind: str  # train | eval | extract | head | sync
    options: dict = field(default_factory=dict)
    timeout_s: float = 60.0  # on the GPU; the dry run allows a loaded 2-core machine more


PARTS = [
    Part("train_iresnet100", "train", {"model": "iresnet100", "compile": False, "data": False}, 75),
    Part("train_ir100", "train", {"model": "ir100", "compile": False, "data": False}, 75),
    Part("train_data_iresnet100", "train", {"model": "iresnet100", "compile": False, "data": True}, 90),
    Part("eval", "eval", {}, 90),
    Part("extract", "extract", {}, 50),
    Part("head_1m", "head", {}, 45),
    Part("sync", "sync", {}, 45),
    Part("train_iresnet100_compile", "train", {"model": "iresnet100", "compile": True, "data": False}, 180),
    Part("train_ir100_compile", "train", {"model": "ir100", "compile": True, "data": False}, 180),
]
DRY_TIMEOUT_S = 240.0


# ---------------------------------------------------------------- the parts (run in a child process) --------


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _row(name: str, value: float, unit: str, peak: float | None = None, target: str = "",
         passed: bool | None = None, **extra) -> dict:
    return {"row": name, "value": value, "unit": unit, "peak_gib": peak, "target": target, "passed": passed,
            "extra": extra}


def _write_rec(folder: Path, num_images: int, per_class: int) -> Path:
    """A RecordIO of ``num_images`` 112x112 JPEGs (``per_class`` per identity): 1,024 distinct smooth-noise
    images (a face crop's JPEG size, ~4-6 KiB at quality 92) repeated, so writing it takes seconds."""
    import numpy as np
    import torch

    from cdface.data.decode import encode_jpeg
    from cdface.data.recordio_writer import write_insightface_rec

    rng = np.random.default_rng(0)
    low = torch.from_numpy(rng.uniform(0, 255, (1024, 3, 14, 14)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(low, size=(112, 112), mode="bilinear", align_corners=False)
    noisy = smooth + torch.from_numpy(rng.normal(0, 6, smooth.shape).astype(np.float32))
    pool = [encode_jpeg(a, quality=92) for a in noisy.clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()]
    labels = np.arange(num_images) // per_class
    paths = write_insightface_rec(folder, labels, lambda i: pool[i % len(pool)])
    return Path(paths["rec"])


def part_train(part: Part, sizes: dict, device_name: str, dry: bool, emit: Callable[[dict], None],
               workdir: Path) -> None:
    import torch
    import train_throughput as tt

    from cdface.threads import available_cores

    argv = ["--device", device_name, *sizes["train"]]
    if not dry:
        argv += ["--model", part.options["model"]]
    if part.options["compile"]:
        argv.append("--compile")
    if dry and part.options["compile"]:
        # dynamo's eager backend: the compile path is exercised without inductor's (minutes-long) CPU codegen
        argv += ["--compile-backend", "eager"]
    args = tt.parse_args(argv)
    device = tt.setup_device(args)
    dataset, workers, data_note = None, 0, "random device images"
    if part.options["data"]:
        from cdface.config import config_from_dict
        from cdface.train.data_setup import build_training_data
        from cdface.train.distributed import DistInfo

        folder = workdir / f"{part.name}_rec"  # the parent removes its work folder, even after a timeout
        start = time.perf_counter()
        rec = _write_rec(folder, sizes["data_images"], sizes["data_images_per_class"])
        written = time.perf_counter() - start
        cfg = tt.build_config(args, "cd")
        cfg = config_from_dict({**_cfg_dict(cfg), "data": {"kind": "recordio", "path": str(rec)}})
        dataset, _ = build_training_data(cfg, DistInfo())
        workers = max(1, available_cores() - 2) if not dry else 1
        data_note = f"RecordIO {len(dataset):,} JPEGs (written in {written:.1f} s), {workers} workers per stage"
    result = tt.measure(args, device, dataset, workers)
    label = f"{args.model} {args.precision}{' CL' if args.channels_last else ''}"
    label += f" {'compile' if args.compile else 'eager'}{' (dynamo, eager backend)' if dry and args.compile else ''}"
    label += ", data" if dataset is not None else ", synthetic"
    common = {"batch": args.batch, "classes": args.classes, "k": args.k, "ne": args.ne, "nh": args.nh,
              "np": args.np, "interval": args.interval, "round_ms": result["round_ms"], "data": data_note,
              "threads": torch.get_num_threads()}
    s2 = result["stage2_sps"]
    emit(_row(f"{label}: stage 1 (ArcFace)", result["stage1_sps"], "samples/s", result["peak_gib"]["1"],
              plain_ms=result["plain_ms"], **common))
    emit(_row(f"{label}: stage 2 (CD)", s2, "samples/s", result["peak_gib"]["2"], ">= 2000", s2 >= 2000,
              cd_ms=result["cd_ms"], img_s_incl_cd=result["stage2_img_s"], **common))
    emit(_row(f"{label}: CD/ArcFace ratio", result["ratio"], "x", None, ">= 0.80", result["ratio"] >= 0.80))


def _cfg_dict(cfg) -> dict:
    from cdface.config import config_to_dict

    return config_to_dict(cfg)


def part_eval(part: Part, sizes: dict, device_name: str, dry: bool, emit: Callable[[dict], None],
              workdir: Path) -> None:
    import eval_speed
    import torch

    device = torch.device(device_name)
    scale = sizes["eval_scale"]
    targets = {"pairs": ("", None), "ijb": ("< 2 s", 2.0), "megaface": ("< 10 s", 10.0)}
    for name in ("pairs", "ijb", "megaface"):
        bench = eval_speed.BENCHES[name]
        if device.type == "cuda":
            bench(0.001, device=device_name)  # CUDA/cuBLAS start-up is not the protocol's time
        _peak_reset(device)
        res = bench(scale, device=device_name)
        target, limit = targets[name]
        emit(_row(f"{name}: {res['size']}", res["seconds"], "s", _peak(device), target,
                  None if limit is None else res["seconds"] < limit, metric=res["metric"]))


def part_extract(part: Part, sizes: dict, device_name: str, dry: bool, emit: Callable[[dict], None],
              workdir: Path) -> None:
    import numpy as np
    import torch

    from cdface.inference import FaceEmbedder
    from cdface.models import create_model

    cfg = sizes["extract"]
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    images = np.random.default_rng(0).integers(0, 256, (cfg["images"], 112, 112, 3), dtype=np.uint8)
    for arch in cfg["models"]:
        embedder = FaceEmbedder(create_model(arch), device=device_name, batch_size=cfg["batch"], flip=True,
                                precision=cfg["precision"])
        embedder.embed(images[: cfg["batch"]])  # warm-up (cudnn autotuning)
        _peak_reset(device)
        start = time.perf_counter()
        embedder.embed(images)
        seconds = time.perf_counter() - start  # embed returns host arrays: the device is drained
        emit(_row(f"{arch} {cfg['precision']} batch {cfg['batch']}, flip", cfg["images"] / seconds, "images/s",
                  _peak(device), images=cfg["images"]))
        del embedder


def part_head(part: Part, sizes: dict, device_name: str, dry: bool, emit: Callable[[dict], None],
              workdir: Path) -> None:
    import torch

    from cdface.heads import create_margin
    from cdface.losses import ClosenessDiversityLoss
    from cdface.miners import last_row_of_class
    from cdface.parallel import ShardedMarginHead, head_memory

    cfg = sizes["head"]
    device = torch.device(device_name)
    gen = torch.Generator(device).manual_seed(0)
    head = ShardedMarginHead(cfg["dim"], cfg["classes"], create_margin("arcface", s=64.0, m=0.5),
                             sample_rate=0.1, generator=gen).to(device)
    head.train()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    cd_loss = ClosenessDiversityLoss(s=64.0)
    batch, k = cfg["batch"], cfg["k"]
    # K classes of NE+NH rows each (the CD batch), the rest distinct random classes
    labels = torch.randint(0, cfg["classes"], (batch,), device=device)
    chosen = labels[:k].clone()
    emb = torch.randn(batch, cfg["dim"], device=device, requires_grad=True)
    easy = torch.randn(k, cfg["ne"], cfg["dim"], device=device, requires_grad=True)
    hard = torch.randn(k, cfg["nh"], cfg["dim"], device=device, requires_grad=True)

    def step(with_cd: bool) -> None:
        out = head(emb, labels)
        loss = out.loss
        if with_cd:
            queries = emb.detach()[last_row_of_class(labels, chosen)]
            found = head.hard_negatives(queries, chosen, cfg["np"], all_ranks=True)
            loss = loss + cd_loss(easy, hard, found.centres.float(), found.mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model = head_memory(cfg["classes"], 1, 0.1, batch, cfg["dim"], "fp32", "sgd")
    for with_cd in (False, True):
        for _ in range(3):
            step(with_cd)
        _peak_reset(device)
        start = time.perf_counter()
        for _ in range(cfg["steps"]):
            step(with_cd)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = 1000 * (time.perf_counter() - start) / cfg["steps"]
        name = f"{cfg['classes']:,} classes, PFC 0.1, batch {batch}" + (
            f", CD branch (K={k}, NP={cfg['np']})" if with_cd else "")
        emit(_row(name, ms, "ms/step", _peak(device), model_total_gib=model.total / 2**30,
                  sampled_classes=model.sampled_classes))


def _host_read_counter(device_only: bool):
    """A TorchFunctionMode counting the calls that read a tensor's value into Python (on a GPU, each one
    waits for the queue): item, tolist, numpy, bool/float/int, .cpu() and .to("cpu"), by call site.
    ``device_only``: count reads of CUDA tensors only (exact on a GPU); else of any tensor except ``.to``
    (on the CPU, an upper bound: host tensors such as the loader's indices are counted too)."""
    import sys

    import torch
    from torch.overrides import TorchFunctionMode

    names = {"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "cpu", "to"}

    class HostReads(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: dict[str, int] = {}

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            source = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if name in names and source is not None:
                on_device = source.device.type != "cpu"
                to_host = name != "to" or (
                    on_device and any(str(a) == "cpu" for a in (*args[1:], *(kwargs or {}).values()))
                )
                if to_host and (on_device or not device_only):
                    caller = sys._getframe(1)
                    site = f"{name} {Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
                    self.calls[site] = self.calls.get(site, 0) + 1
            return func(*args, **(kwargs or {}))

    return HostReads()


def part_sync(part: Part, sizes: dict, device_name: str, dry: bool, emit: Callable[[dict], None],
              workdir: Path) -> None:
    import warnings

    import torch
    import train_throughput as tt

    argv = ["--device", device_name, *(sizes["train"] if dry else sizes["sync_train"])]
    args = tt.parse_args(argv)
    device = tt.setup_device(args)
    stage = tt.Stage(args, "cd", device)
    stage.run(args.warmup)
    cuda = device.type == "cuda"
    per_step: list[tuple[int, int, bool]] = []  # (sync warnings, host reads, CD step)
    where: dict[str, int] = {}
    reads: dict[str, int] = {}
    for _ in range(max(sizes["sync_steps"], args.interval)):
        counter = _host_read_counter(device_only=cuda)
        # the loop's work before the step (the sampler's draw, the loader's host tensors) is not the step's
        batch = stage.prepare(*stage.next_batch())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with counter:  # the step alone: Stage.run's own torch.cuda.synchronize would be counted
                    cd_images = stage.step_on(batch)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        for w in syncs:
            key = f"{Path(w.filename).name}:{w.lineno}"
            where[key] = where.get(key, 0) + 1
        for site, count in counter.calls.items():
            reads[site] = reads.get(site, 0) + count
        per_step.append((len(syncs), sum(counter.calls.values()), cd_images > 0))
    plain = [s for s in per_step if not s[2]] or per_step
    cd = [s for s in per_step if s[2]] or per_step
    label = f"{args.model} batch {args.batch}, {len(per_step)} steady-state stage-2 steps"
    for what, index, unit, device_only in (("sync warnings", 0, "syncs", True), ("host reads", 1, "calls", False)):
        if device_only and not cuda:
            continue  # set_sync_debug_mode watches CUDA only
        for kind, steps in (("plain", plain), ("CD", cd)):
            total = sum(s[index] for s in steps)
            extra = {"where": where} if index == 0 else {"calls": reads}
            emit(_row(f"{label}: {what} per {kind} step", total / len(steps), unit, None, "0", total == 0,
                      steps=len(steps), **extra))


RUNNERS = {"train": part_train, "eval": part_eval, "extract": part_extract, "head": part_head, "sync": part_sync}


def run_part(name: str, rows_path: Path, dry: bool, device_name: str) -> None:
    """Child process: run one part, appending each row to ``rows_path`` (one JSON line) as it is measured."""
    part = next(p for p in PARTS if p.name == name)
    sizes = SIZES["dry" if dry else "gpu"]

    def emit(row: dict) -> None:
        if dry:
            row["passed"] = None  # the targets are the GPU's; tiny CPU sizes neither meet nor miss them
        with rows_path.open("a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
        print(f"[{name}] {row['row']}: {row['value']:.4g} {row['unit']}", flush=True)

    RUNNERS[part.kind](part, sizes, device_name, dry, emit, rows_path.parent)


def _jsonable(x):
    return float(x) if hasattr(x, "__float__") else str(x)


# ---------------------------------------------------------------- the parent: budget, files ------------------


def environment(device_name: str) -> dict:
    import torch

    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "device": "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "host": platform.node(),
    }
    if device_name.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env["device"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    try:
        import simplejpeg  # noqa: F401

        env["jpeg_decoder"] = "simplejpeg"
    except ImportError:
        env["jpeg_decoder"] = "Pillow (simplejpeg absent)"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10)
        env["commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"# cdface GPU suite{' (dry run, CPU, tiny sizes)' if report['dry_run'] else ''}",
        "",
        f"{env['device']}{' (' + str(env.get('gpu_memory_gib')) + ' GiB)' if env.get('gpu_memory_gib') else ''}, "
        f"torch {env['torch']}, CUDA {env['cuda'] or '-'}, cuDNN {env['cudnn'] or '-'}, {env['cpu_cores']} CPU "
        f"cores, JPEG decoder {env['jpeg_decoder']}, commit {env['commit'] or '-'}, {env['date_utc']} UTC.",
        f"Command: `{report['command']}` ({report['wall_s']:.0f} s wall).",
        "",
        "| part | row | value | unit | peak GPU GiB | target | result |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for part in report["parts"]:
        for row in part["rows"]:
            verdict = "" if row["passed"] is None else ("pass" if row["passed"] else "FAIL")
            lines.append(f"| {part['name']} | {row['row']} | {_fmt(row['value'])} | {row['unit']} | "
                         f"{_fmt(row['peak_gib'], 3)} | {row['target']} | {verdict} |")
    lines += ["", "| part | status | seconds | note |", "|---|---|---:|---|"]
    for part in report["parts"]:
        lines.append(f"| {part['name']} | {part['status']} | {part['seconds']:.1f} | {part['note']} |")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results", help="folder of the JSON and Markdown files")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of all parts")
    parser.add_argument("--dry-run", action="store_true", help="every part at tiny size on the CPU")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(p.name for p in PARTS)}")
    parser.add_argument("--device", help="cuda (default when present) or cpu; the dry run uses cpu")
    parser.add_argument("--run-part", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    device_name = "cpu" if args.dry_run else (args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.run_part:
        run_part(args.run_part, Path(args.rows), args.dry_run, device_name)
        return 0
    if device_name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: no CUDA device; use --dry-run for the CPU check")
    wanted = [p.strip() for p in args.parts.split(",")] if args.parts else [p.name for p in PARTS]
    unknown = sorted(set(wanted) - {p.name for p in PARTS})
    if unknown:
        raise SystemExit(f"gpu_suite: unknown part(s) {unknown}; choose from {[p.name for p in PARTS]}")
    parts = [p for p in PARTS if p.name in wanted]

    start = time.monotonic()
    deadline = start + args.budget_s
    env = environment(device_name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{'dryrun_' if args.dry_run else ''}gpu_suite_{_slug(env['device'])}_{env['date_utc'][:10]}"
    command = "PYTHONPATH=src python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"environment": env, "dry_run": args.dry_run, "command": command.strip(), "budget_s": args.budget_s,
              "wall_s": 0.0, "parts": []}
    print(f"gpu_suite: {env['device']}, torch {env['torch']}, CUDA {env['cuda']}, {len(parts)} parts, "
          f"budget {args.budget_s:.0f} s -> {out / stem}.{{json,md}}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="cdface_gpu_suite_"))
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent), *filter(None, [child_env.get("PYTHONPATH")])]
    )
    for part in parts:
        left = deadline - time.monotonic() - 2.0
        timeout = min(DRY_TIMEOUT_S if args.dry_run else part.timeout_s, left)
        entry = {"name": part.name, "status": "skipped", "seconds": 0.0, "note": "", "rows": []}
        report["parts"].append(entry)
        if timeout < (5.0 if args.dry_run else 15.0):
            entry["note"] = f"budget spent ({max(0.0, left):.0f} s left)"
            print(f"[{part.name}] skipped: {entry['note']}", flush=True)
            _write(report, out, stem, start)
            continue
        rows_path, log_path = workdir / f"{part.name}.jsonl", workdir / f"{part.name}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--run-part", part.name, "--rows", str(rows_path)]
        cmd += ["--dry-run"] if args.dry_run else ["--device", device_name]
        t0 = time.monotonic()
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                entry["status"] = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the part's own process group: its loader workers too
                proc.wait()
                entry["status"] = f"timeout ({timeout:.0f} s)"
        entry["seconds"] = time.monotonic() - t0
        if rows_path.exists():
            entry["rows"] = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
        tail = log_path.read_text(errors="replace").splitlines()
        if entry["status"] != "ok":
            errors = [line for line in tail if line.strip()][-1:] or ["(no output)"]
            entry["note"] = errors[0][:300]
            entry["log_tail"] = tail[-30:]
        print("\n".join(line for line in tail if line.startswith(f"[{part.name}]")), flush=True)
        print(f"[{part.name}] {entry['status']} in {entry['seconds']:.1f} s", flush=True)
        _write(report, out, stem, start)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"gpu_suite: wrote {out / stem}.json and .md in {time.monotonic() - start:.0f} s")
    print(markdown(report))
    return 0


def _write(report: dict, out: Path, stem: str, start: float) -> None:
    """Rewrite both files (atomically) with every part so far."""
    report["wall_s"] = time.monotonic() - start
    for suffix, text in ((".json", json.dumps(report, indent=1, default=_jsonable)), (".md", markdown(report))):
        tmp = out / (stem + suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / (stem + suffix))


if __name__ == "__main__":
    sys.exit(main())
