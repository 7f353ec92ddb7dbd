"""Small array helpers shared by the scoring modules: accept numpy or torch, normalise like sklearn."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_cuda_tensor(x: Any) -> bool:
    """True for a torch tensor on a CUDA device (checked without importing torch)."""
    device = getattr(x, "device", None)
    return type(x).__module__.startswith("torch") and getattr(device, "type", "") == "cuda"


def is_torch(x: Any) -> bool:
    """True for a torch tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch")


def as_index(idx: np.ndarray, like: Any) -> Any:
    """``idx`` as an index for ``like``: an int64 tensor on its device for a tensor, else unchanged."""
    if is_torch(like):
        import torch

        return torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(like.device)
    return idx


def to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy copy/view of an array-like or a (possibly CUDA) torch tensor."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr if dtype is None else arr.astype(dtype, copy=False)


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """Row-normalise exactly like ``sklearn.preprocessing.normalize`` (einsum norms, near-zero norms -> 1)."""
    x = np.array(x, dtype=np.float64 if x.dtype.kind not in "f" else x.dtype, copy=True)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    x /= norms[:, None]
    return x


def plain_float(value: Any) -> float | None:
    """A JSON-safe Python float (NaN/inf -> None) so that output is strict, bit-stable JSON."""
    f = float(value)
    return f if math.isfinite(f) else None


def far_key(far: float) -> str:
    """The JSON key of a FAR level: Python's shortest repr ("1e-06", "0.0001", "0.1")."""
    return repr(float(far))
