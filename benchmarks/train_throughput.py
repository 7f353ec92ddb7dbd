"""Training throughput of stage 1 (plain ArcFace) and stage 2 (closeness & diversity), in samples/s.

Both stages run the trainer's own step on synthetic inputs: random uint8 crops already on the device, random
labels (``--classes`` identities of ``--images-per-class`` samples each), a random (uniform) score bank.
Stage 2 is the full cost of the method: every ``--interval``-th step draws K classes from the batch and
their NE easy / NH hard samples from the score bank (the real ``FaceBatchSampler`` and ``EasyHardMiner``),
mines the NP hard-negative centres (``head.hard_negatives``, the one miner ``mine_hard_negatives``), runs
the extra K*(NE+NH) forward/backward and the ``ClosenessDiversityLoss``.
Both stages also include the finite-loss check, the optimizer/scheduler step and the score-bank update.
What is left out is the data pipeline (decoding, augmentation; see benchmarks/data_throughput.py),
DDP communication, logging, verification and checkpoints.

The two stages are built side by side and timed in alternating rounds of ``--steps`` steps (a whole number
of intervals), so that a change of load or clocks hits both; each stage's time is the median round (GPU)
or the fastest round (CPU, where other jobs share the cores), see ``--stat``.

With K*(NE+NH) = B (the paper: 64 * 8 = 512) a CD step costs about two plain steps, so stage 2 can reach
at most about interval / (interval + 1) = 0.83 x stage 1; the 0.80 target leaves ~4% for the rest.

samples/s counts the B training samples of each step, as ``samples_per_s`` in metrics.jsonl does; the
K*(NE+NH) CD images of a CD step are extra work on top (the "img/s" column counts them too).

The step is the trainer's own: ``cdface.train.step.TrainStep``, the object ``fit`` calls once per optimizer
step, built here with the collaborators ``fit`` builds (``create_model``, ``create_head``, ``model_options``,
``ClosenessDiversityLoss``, ``build_optimizer``, ``lr_multiplier``, ``GradScaler``, ``ScoreBank``,
``FaceBatchSampler`` with ``take_plan``), so a change to the step is measured here too. It includes the
device-side finite checks, the optimizer/scheduler step and the score-bank update; the benchmark reads the
bad-step flags once per round (``fit`` reads them at logging steps).

Targets on one H100/H200 (documented, not asserted), iresnet100, batch 512, bf16, K=64, NE=7, NH=1,
NP=500, interval 5, 85,742 classes (MS1MV2): stage 2 >= 2,000 samples/s and >= 0.80 x stage 1.
(The paper's configs train ``ir100``, face.evoLVe's IR-100: pass ``--model ir100`` for that backbone.)

    # GPU target
    PYTHONPATH=src python benchmarks/train_throughput.py --device cuda
    PYTHONPATH=src python benchmarks/train_throughput.py --device cuda --channels-last --compile
    # CPU smoke run (defaults: iresnet_tiny, batch 32, fp32, K=4, 10,000 classes, best of 6 rounds)
    PYTHONPATH=src python benchmarks/train_throughput.py --device cpu
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import Tensor

from cdface.config import TrainConfig, config_from_dict
from cdface.data.bad_samples import BadSampleTracker
from cdface.heads import create_head
from cdface.losses import ClosenessDiversityLoss
from cdface.models import InputContract, create_model
from cdface.train.bad_step import BadSteps
from cdface.train.cd_sampler import FaceBatchSampler
from cdface.train.distributed import DistInfo
from cdface.train.health import TrainingHealth
from cdface.train.optim import build_optimizer
from cdface.train.schedule import lr_multiplier
from cdface.train.score_bank import ScoreBank
from cdface.train.step import MicroBatch, TrainStep, to_micro_batch
from cdface.train.trainer import model_options, resolve_cd_scale

# Defaults per device: the GPU target of the paper's MS1MV2 run, and a CPU run that finishes in a minute
# while keeping the paper's proportion K*(NE+NH) = batch size.
DEFAULTS = {
    "cuda": {
        "model": "iresnet100",
        "batch": 512,
        "precision": "bf16",
        "classes": 85_742,
        "k": 64,
        "embedding": 512,
        "steps": 50,
        "rounds": 3,
        "warmup": 10,
        "stat": "median",
    },
    "cpu": {
        "model": "iresnet_tiny",
        "batch": 32,
        "precision": "fp32",
        "classes": 10_000,
        "k": 4,
        "embedding": 128,
        "steps": 5,
        "rounds": 6,
        "warmup": 5,
        "stat": "min",
    },
}


def build_config(args: argparse.Namespace, method: str) -> TrainConfig:
    return config_from_dict(
        {
            "method": method,
            "batch_size": args.batch,
            "device": args.device,
            "precision": args.precision,
            "compile": args.compile,
            "seed": 0,
            "model": {"arch": args.model, "embedding_size": args.embedding, "channels_last": args.channels_last},
            "head": {"name": "arcface", "params": {"s": 64.0, "m": 0.5}},
            "optim": {"optimizer": "sgd", "lr": 0.1, "scheduler": "constant", "milestones": []},
            "cd": {
                "interval": args.interval,
                "num_classes": args.k,
                "num_easy": args.ne,
                "num_hard": args.nh,
                "num_negatives": args.np,
                "percentile": 0.2,
            },
        }
    )


def synthetic_labels(num_classes: int, images_per_class: int) -> tuple[np.ndarray, list[np.ndarray]]:
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), images_per_class)
    starts = np.arange(num_classes) * images_per_class
    return labels, [np.arange(s, s + images_per_class, dtype=np.int64) for s in starts]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stage:
    """One stage's model, head, optimizer, score bank and sampler, built as `fit` builds them; `run(steps)`
    trains `steps` more steps exactly as `fit`'s loop does and returns (seconds, CD images).

    Without ``dataset`` the images are random uint8 crops already on the device; with one (a training dataset
    as ``build_training_data`` returns it) a DataLoader built as `fit` builds it, with ``workers`` worker
    processes, decodes the images (uint8, normalised on the device as `fit` does)."""

    def __init__(
        self, args: argparse.Namespace, method: str, device: torch.device, dataset=None, workers: int = 0
    ) -> None:
        cfg = self.cfg = build_config(args, method)
        self.device = device
        self.info = info = DistInfo()
        torch.manual_seed(cfg.seed)
        if dataset is None:
            self.labels_np, class_to_indices = synthetic_labels(args.classes, args.images_per_class)
        else:
            self.labels_np, class_to_indices = dataset.labels, dataset.class_to_indices()

        self.scores = ScoreBank(len(self.labels_np), momentum=cfg.scores.momentum, seed=cfg.seed, device=device)
        self.bad_samples = BadSampleTracker(max_bad_fraction=cfg.data.max_bad_fraction, source="synthetic")
        self.sampler = FaceBatchSampler(
            self.labels_np,
            class_to_indices,
            batch_size=cfg.batch_size,
            rank=info.rank,
            world_size=info.world_size,
            seed=cfg.seed,
            cd=cfg.cd if cfg.method == "cd" else None,
            scores=self.scores.lagged,
        )
        steps_per_epoch = self.sampler.steps_per_epoch
        total_steps = args.warmup + args.steps * args.rounds
        if total_steps > steps_per_epoch:
            raise SystemExit(f"{total_steps} steps exceed one synthetic epoch ({steps_per_epoch} steps)")

        backbone = create_model(cfg.model.arch, embedding_size=cfg.model.embedding_size, **model_options(cfg))
        backbone = backbone.to(device)
        if cfg.model.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        self.preprocess = InputContract.from_model(backbone)  # as fit: the model's own input contract
        self.head = create_head(cfg.head.name, cfg.model.embedding_size, args.classes, **cfg.head.params).to(device)
        cd_loss = ClosenessDiversityLoss(s=resolve_cd_scale(cfg, self.head.margin), wc=cfg.cd.wc, wd=cfg.cd.wd)
        optimizer = build_optimizer(cfg.optim, [backbone, self.head])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg.optim, steps_per_epoch, total_steps))
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
        # One process: no DDP wrapper (fit wraps the backbone before torch.compile).
        self.model = torch.compile(backbone, backend=args.compile_backend) if cfg.compile else backbone
        self.bad_steps = BadSteps(device, limit=1)
        health = TrainingHealth(0.0, device, collapse_after_steps=0)
        self.train_step = TrainStep(
            cfg, info, device, self.model, self.head, [], optimizer, scheduler, scaler, self.scores, cd_loss,
            health, self.bad_steps, local_batch=self.sampler.local_batch,
        )

        # Random crops already on the device: enough rows for the batch plus the CD samples.
        per_class = cfg.cd.num_easy + cfg.cd.num_hard
        rows = cfg.batch_size + (cfg.cd.num_classes * per_class if cfg.method == "cd" else 0)
        # uint8 crops, as the loader gives them: the model's preprocessing is part of the measured loop
        self.image_pool = torch.randint(
            0, 256, (rows if dataset is None else 0, 3, 112, 112), dtype=torch.uint8, device=device
        )
        self.no_bad = torch.full((rows,), -1, dtype=torch.int64)

        self.model.train()
        self.head.train()
        self.sampler.set_epoch(0, 0)
        self.loader = None
        if dataset is not None:  # as fit builds it
            self.loader = iter(
                torch.utils.data.DataLoader(
                    dataset,
                    batch_sampler=self.sampler,
                    num_workers=workers,
                    pin_memory=device.type == "cuda",
                    prefetch_factor=cfg.data.prefetch_factor if workers > 0 else None,
                )
            )
        else:
            self.batches = iter(self.sampler)
        self.step = 0

    def next_batch(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The loader's part: (images, labels, indices, bad_index) of the next step."""
        if self.loader is not None:
            return next(self.loader)
        batch = next(self.batches)
        indices = torch.as_tensor(batch, dtype=torch.int64)
        labels = torch.from_numpy(self.labels_np[batch])
        return self.image_pool[: len(batch)], labels, indices, self.no_bad[: len(batch)]

    def run(self, steps: int) -> tuple[float, int]:
        _sync(self.device)
        start = time.perf_counter()
        cd_images = 0
        for _ in range(steps):
            cd_images += self.train_one(*self.next_batch())
        _sync(self.device)
        seconds = time.perf_counter() - start
        bad, _, last = self.bad_steps.read()  # fit reads the flags at logging steps
        if bad:
            raise SystemExit(f"{bad} non-finite step(s), the last at step {last}")
        return seconds, cd_images

    def train_one(self, images: Tensor, labels: Tensor, indices: Tensor, bad_index: Tensor) -> int:
        """What `fit`'s loop does with one loader batch (grad_accum 1): ``prepare``, then the trainer's step."""
        return self.step_on(self.prepare(images, labels, indices, bad_index))

    def prepare(self, images: Tensor, labels: Tensor, indices: Tensor, bad_index: Tensor) -> MicroBatch:
        """The loop's part before the step, as `fit` does it: bad-sample accounting, then ``to_micro_batch``."""
        self.bad_samples.update(bad_index)
        batch = to_micro_batch(
            images, labels, indices, self.sampler.local_batch, self.device, self.preprocess,
            self.cfg.model.channels_last,
        )
        batch.plan = self.sampler.take_plan(self.step)
        return batch

    def step_on(self, batch: MicroBatch) -> int:
        """The trainer's step on ``batch``; returns the CD images it carried (0 on a plain step)."""
        self.train_step([batch], self.step)
        self.step += 1
        return len(batch.images) - self.sampler.local_batch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", help="backbone (default: iresnet100 on cuda, iresnet_tiny on cpu)")
    parser.add_argument("--batch", type=int, help="global batch size (default: 512 on cuda, 32 on cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--classes", type=int, help="identities (default: 85742 = MS1MV2 on cuda, 10000 on cpu)")
    parser.add_argument("--images-per-class", type=int, default=68, help="samples per identity (MS1MV2: ~68)")
    parser.add_argument("--embedding", type=int, help="embedding size (default: 512 on cuda, 128 on cpu)")
    parser.add_argument("--steps", type=int, help="timed steps per round, rounded up to a multiple of --interval")
    parser.add_argument("--rounds", type=int, help="timed rounds per stage, alternating stages (see --stat)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (at least --interval + 1)")
    parser.add_argument(
        "--stat",
        choices=["median", "min"],
        help="per-stage time over the rounds (default: median on cuda; min on cpu, where other jobs interfere)",
    )
    parser.add_argument("--interval", type=int, default=5, help="a CD step every N steps (cd.interval)")
    parser.add_argument("--k", type=int, help="CD classes per CD step, cd.num_classes (default: 64 cuda, 4 cpu)")
    parser.add_argument("--ne", type=int, default=7, help="easy samples per class (cd.num_easy)")
    parser.add_argument("--nh", type=int, default=1, help="hard samples per class (cd.num_hard)")
    parser.add_argument("--np", type=int, default=500, help="hard-negative centres per class (cd.num_negatives)")
    parser.add_argument("--channels-last", action="store_true", help="model.channels_last=true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone (compile=true)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (fit: inductor)")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.steps = -(-args.steps // args.interval) * args.interval
    args.warmup = max(args.warmup, args.interval + 1)
    return args


def setup_device(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device available")
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # as fit() does when not deterministic
    return device


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def measure(args: argparse.Namespace, device: torch.device, dataset=None, workers: int = 0) -> dict:
    """Both stages side by side in alternating rounds (see the module docstring); returns a dict:
    ``stage1_sps``, ``stage2_sps`` (samples/s), ``ratio``, ``stage2_img_s`` (CD images included),
    ``plain_ms``, ``cd_ms`` (per step), ``round_ms`` ({"1": [...], "2": [...]} ms/step per round) and
    ``peak_gib`` ({"1": GiB, "2": GiB}: the peak allocated while that stage ran, both stages resident;
    None on CPU). ``dataset``/``workers``: real data loading (see `Stage`)."""
    stages = {
        "1": Stage(args, "arcface", device, dataset, workers),
        "2": Stage(args, "cd", device, dataset, workers),
    }
    for stage in stages.values():
        stage.run(args.warmup)
    # Alternate the stages round by round so that a change of load (a shared machine, GPU clocks) hits both.
    times: dict[str, list[float]] = {"1": [], "2": []}
    peaks: dict[str, float | None] = {"1": None, "2": None}
    cd_images: list[int] = []
    for _ in range(args.rounds):
        for key, stage in stages.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, extra = stage.run(args.steps)
            peak = _peak_gib(device)
            if peak is not None:
                peaks[key] = max(peaks[key] or 0.0, peak)
            times[key].append(seconds)
            if key == "2":
                cd_images.append(extra)
    reduce = np.median if args.stat == "median" else np.min
    t1, t2 = float(reduce(times["1"])), float(reduce(times["2"]))
    samples = args.steps * args.batch
    s1, s2 = samples / t1, samples / t2
    return {
        "stage1_sps": s1,
        "stage2_sps": s2,
        "ratio": s2 / s1,
        "stage2_img_s": (samples + int(np.median(cd_images))) / t2,
        "plain_ms": 1000 * t1 / args.steps,
        "cd_ms": 1000 * (t2 - t1 * (args.interval - 1) / args.interval) / (args.steps / args.interval),
        "round_ms": {k: [1000 * t / args.steps for t in v] for k, v in times.items()},
        "peak_gib": peaks,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup_device(args)
    print(
        f"K={args.k} NE={args.ne} NH={args.nh} NP={args.np} interval={args.interval} classes={args.classes} "
        f"images/class={args.images_per_class} embedding={args.embedding} steps={args.steps}x{args.rounds} "
        f"warmup={args.warmup} stat={args.stat} channels_last={args.channels_last} compile={args.compile} "
        f"threads={torch.get_num_threads()}"
    )
    r = measure(args, device)
    header = (
        f"| {'device':<6} | {'model':<14} | {'batch':>5} | {'prec':<4} | {'stage-1 samples/s':>17} "
        f"| {'stage-2 samples/s':>17} | {'ratio':>5} | {'stage-2 img/s incl. CD':>22} |"
    )
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    print(
        f"| {device.type:<6} | {args.model:<14} | {args.batch:>5} | {args.precision:<4} | {r['stage1_sps']:>17.1f} "
        f"| {r['stage2_sps']:>17.1f} | {r['ratio']:>5.3f} | {r['stage2_img_s']:>22.1f} |"
    )
    spread = {k: " ".join(f"{t:.0f}" for t in v) for k, v in r["round_ms"].items()}
    print(
        f"per step: plain {r['plain_ms']:.1f} ms, CD step ~{r['cd_ms']:.1f} ms (derived: one interval = "
        f"{args.interval - 1} plain steps + 1 CD step); per-round ms/step: stage 1 {spread['1']}, "
        f"stage 2 {spread['2']}"
    )
    if device.type == "cuda":
        peak = r["peak_gib"]
        print(f"peak GPU memory (both stages resident) stage 1 {peak['1']:.1f} GiB, stage 2 {peak['2']:.1f} GiB")


if __name__ == "__main__":
    main()
