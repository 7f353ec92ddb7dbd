"""cdface.eval: protocol-exact scoring from saved features (pairs, IJB-B/C 1:1 and 1:N, MegaFace, 1:N
identification / TinyFace, RFW, error-versus-reject).

Pure functions, numpy in (torch accepted), a small result dataclass out (``to_dict()`` for JSON).
MegaFace and identification need torch and are imported lazily, like the other newer protocols.
"""

from __future__ import annotations

import importlib
from typing import Any

from cdface.eval.ijb import ijb_identification, ijb_verification
from cdface.eval.ijb_meta import load_ijb_1n_meta, load_ijb_meta
from cdface.eval.roc import roc_curve, tar_at_far
from cdface.eval.verification import embedding_norm_stats, evaluate_pairs, flip_fuse

_LAZY = {
    "megaface_identification": "cdface.eval.megaface",
    "megaface_verification": "cdface.eval.megaface",
    "megaface_evaluate": "cdface.eval.megaface",
    "read_opencv_matrix": "cdface.eval.megaface_io",
    "write_opencv_matrix": "cdface.eval.megaface_io",
    "identification": "cdface.eval.identification",
    "error_versus_reject": "cdface.eval.erc",
    "evaluate_rfw": "cdface.eval.rfw",
    "read_tinyface_layout": "cdface.eval.tinyface",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cdface.eval' has no attribute {name!r}")


__all__ = [
    "evaluate_pairs", "flip_fuse", "embedding_norm_stats", "roc_curve", "tar_at_far", "ijb_verification",
    "ijb_identification", "load_ijb_meta", "load_ijb_1n_meta", *_LAZY,
]
