"""Where MTCNN's weights come from: the `facenet-pytorch` wheel (MIT licence), found without importing it.

The wheel ships `facenet_pytorch/data/{pnet,rnet,onet}.pt`, three plain state_dicts of tensors. Importing the
package would import torchvision and its pinned torch, so the files are located through the installed
distribution's file list (`importlib.metadata`) and read with the package's weights-only `torch.load`.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch

from cdface.errors import CdfaceError, FormatError
from cdface.files import load_weights

__all__ = ["DISTRIBUTION", "INSTALL_HINT", "NETWORKS", "mtcnn_weight_files", "load_mtcnn_weights"]

DISTRIBUTION = "facenet-pytorch"
INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"
NETWORKS = ("pnet", "rnet", "onet")


def mtcnn_weight_files() -> dict[str, Path]:
    """``{"pnet": path, "rnet": path, "onet": path}`` of the installed wheel's weight files.

    CdfaceError (one line, with the install command) when the distribution or one of its files is missing.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise CdfaceError(
            f"the MTCNN detector needs the weights shipped in the facenet-pytorch wheel, which is not installed: "
            f"run `{INSTALL_HINT}` (--no-deps: only its weight files are used), or pass --detector FILE.onnx"
        ) from None
    wanted = {f"facenet_pytorch/data/{name}.pt": name for name in NETWORKS}
    found = {wanted[str(f).replace("\\", "/")]: Path(str(dist.locate_file(f)))
             for f in dist.files or () if str(f).replace("\\", "/") in wanted}
    missing = [n for n in NETWORKS if n not in found or not found[n].is_file()]
    if missing:
        raise CdfaceError(
            f"the facenet-pytorch installation has no {', '.join(f'{n}.pt' for n in missing)}: reinstall it with "
            f"`{INSTALL_HINT}`"
        )
    return found


def load_mtcnn_weights() -> dict[str, dict[str, torch.Tensor]]:
    """The three networks' state_dicts (float32 tensors), loaded weights-only. FormatError naming the file
    when one is not a dict of tensors."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, path in mtcnn_weight_files().items():
        state = load_weights(path, expected=f"MTCNN {name} weights (a state_dict)")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise FormatError(path, None, f"MTCNN {name} weights: a state_dict of tensors")
        out[name] = {str(k): v.float() for k, v in state.items()}
    return out
