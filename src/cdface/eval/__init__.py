"""cdface.eval: evaluation, from a model to a report, in the order of the pipeline.

- scoring functions, protocol-exact, from saved features (pairs, IJB-B/C 1:1 and 1:N, MegaFace, 1:N
  identification / TinyFace, RFW, error-versus-reject): pure functions, numpy in (torch accepted), a small
  result dataclass out (``to_dict()`` for JSON) -- `verification`, `roc`, `ijb*`, `megaface`, `identification`,
  `ranking`, `rfw`, `erc`; `cdface score` runs them on feature files;
- readers of each benchmark's layout: `ijb_meta`, `megaface_layout`, `megaface_io`, `tinyface`, `rfw`;
- targets that extract features from a model and score them as each reference does: `targets/` (pairs, ijb,
  megaface, rfw, tinyface), driven by `evaluate` (`evaluate_model`, `evaluate_models`; `cdface eval`);
- the report: `report` (results.json, results.md, plots); `thresholds` reads a pair threshold back.

Model loading, the embedder and feature extraction are `cdface.inference`'s. Everything that needs torch
or a model is imported lazily.
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
    "evaluate_model": "cdface.eval.evaluate",
    "evaluate_models": "cdface.eval.evaluate",
    "verify_pairs": "cdface.eval.targets.pairs",
    "TargetResult": "cdface.eval.results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cdface.eval' has no attribute {name!r}")


__all__ = [
    "evaluate_pairs", "flip_fuse", "embedding_norm_stats", "roc_curve", "tar_at_far", "ijb_verification",
    "ijb_identification", "load_ijb_meta", "load_ijb_1n_meta", *_LAZY,
]
