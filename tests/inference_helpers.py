"""Tiny models and image helpers shared by the inference and evaluation tests (CPU, milliseconds per call).

Imported by the test modules as `inference_helpers` (pytest puts tests/, the folder of conftest.py, on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


class TinyNet(nn.Module):
    """A small conv net shaped like a face backbone: (N,3,112,112) -> (N, D) with BN, PReLU, linear."""

    def __init__(self, embedding_size: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=4, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.PReLU(8),
            nn.Conv2d(8, 8, 3, stride=4, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.Flatten(),
            nn.Linear(8 * 7 * 7, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )
        self.input_cfg = {"input_size": (112, 112), "mean": (0.5,) * 3, "std": (0.5,) * 3, "color": "RGB"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MeanColor(nn.Module):
    """Embedding = the mean of each normalised input channel: lets tests read back the preprocessing."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + self.anchor


def calibrate(model: nn.Module, seed: int = 0, samples: int = 4) -> nn.Module:
    """Give BatchNorm layers real running statistics (random init leaves them at 0/1, outputs explode)."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(samples, 3, 112, 112, generator=generator))
    return model.eval()


def tiny_net(embedding_size: int = 16, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return calibrate(TinyNet(embedding_size), seed, samples=8)


def random_faces(n: int = 6, seed: int = 0) -> np.ndarray:
    """Random 'aligned crops' (uint8 RGB 112x112)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def normalise(images: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> torch.Tensor:
    """The reference preprocessing written out: RGB uint8 NHWC -> (x/255 - mean)/std NCHW."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


SRC = Path(__file__).resolve().parents[1] / "src"


def run_cdface(*args: str, cwd: Path | None = None, timeout: float = 900):
    """Run `python -m cdface ARGS` in a fresh interpreter, as a user's shell would; returns CompletedProcess."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "cdface", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )

