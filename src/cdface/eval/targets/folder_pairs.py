"""A pair-set target from a folder (`cdface eval --targets FOLDER [--detect]`): LFW's layout as it is
distributed, ``FOLDER/<name>/<name>_%04d.jpg`` with LFW's ``FOLDER/pairs.txt``, the input of `cdface data
make-bin`, scored by the same protocol as a `.bin` (`cdface.eval.targets.pairs`: insightface's 10-fold
verification).

The images are used as they are (aligned crops), or with `detect` as photos: each photo's largest face
(the face `compare` and `data pack --detect` take) is found and aligned with its five points by
`align_face` (insightface's `norm_crop`). A pair with a photo in which no face is found cannot be scored:
it is left out, counted (`pairs_without_face`) and named in the provenance, never guessed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from cdface.errors import FormatError
from cdface.eval.results import TargetResult
from cdface.files import sha256_file
from cdface.inference.embedder import FaceEmbedder

__all__ = ["PAIRS_FILE", "evaluate_folder_pairs"]

PAIRS_FILE = "pairs.txt"


def _crops(files: list[Path], detect: str | None, face_filter: dict[str, Any], progress: bool
           ) -> tuple[dict[Path, bytes], list[str], str | None]:
    """{file: encoded image} of the files (as they are, or aligned faces with `detect`), the photos without a
    face ('<photo>: reason'), and the detector's name."""
    if detect is None:
        return {f: f.read_bytes() for f in files}, [], None
    from cdface.data.align import align_face
    from cdface.data.decode import decode_image
    from cdface.detect import create_detector
    from cdface.detect.crops import FaceSelection
    from cdface.detect.pack import largest_per_photo
    from cdface.detect.photos import find_faces

    detector = create_detector(None if detect == "mtcnn" else detect)
    found = find_faces(detector, files, FaceSelection(**face_filter), progress=progress)
    out: dict[Path, bytes] = {}
    for row in largest_per_photo(found.rows):
        image = decode_image(Path(row.path).read_bytes(), row.path)
        out[files[row.photo]] = _png(align_face(image, np.asarray(row.face.landmarks)))
    return out, found.no_face + found.errors, getattr(detector, "name", type(detector).__name__)


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def evaluate_folder_pairs(
    embedder: FaceEmbedder,
    target: str,
    folder: Path,
    detect: str | None = None,
    face_filter: dict[str, Any] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    nfolds: int = 10,
    far_levels: Any = (),
    strict: bool = False,
) -> TargetResult:
    """Score the pairs of ``folder/pairs.txt`` (LFW's format and file naming) with insightface's protocol.

    `detect`: a detector spec (`cdface.detect.create_detector`; "mtcnn" or an .onnx path) when the images
    are photos; `face_filter`: `FaceSelection` keywords (min_score, min_face_size). FormatError for a folder
    without pairs.txt, a listed image that does not exist, or fewer scorable pairs than folds.
    """
    from cdface.data.lfw_pairs import lfw_image_path, read_lfw_pairs
    from cdface.data.pairs_bin import PairSet
    from cdface.eval.targets.pairs import _run_pairs, pair_score_curves

    pairs_txt = folder / PAIRS_FILE
    if not pairs_txt.is_file():
        raise FormatError(folder, None, f"a pair-set folder: {PAIRS_FILE} (LFW's format) beside <name>/<name>_NNNN.jpg"
                          " (to draw pairs from identity folders: cdface data make-pairs)")
    pairs = read_lfw_pairs(pairs_txt)
    sides = [(lfw_image_path(folder, n1, i1), lfw_image_path(folder, n2, i2)) for n1, i1, n2, i2 in pairs]
    files = sorted({f for pair in sides for f in pair})
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise FormatError(pairs_txt, None, f"existing images for every pair; {missing} is not there")
    crops, no_face, detector = _crops(files, detect, face_filter or {}, progress)
    scorable = [k for k, (a, b) in enumerate(sides) if a in crops and b in crops]
    if len(scorable) < len(sides):
        print(f"{target}: {len(sides) - len(scorable)} of {len(sides)} pairs left out: a photo without a face "
              f"({len(no_face)} photo(s), e.g. {no_face[0] if no_face else '?'})", file=sys.stderr)
    issame = np.array([pairs[k][0] == pairs[k][2] for k in scorable], dtype=bool)
    pair_set = PairSet([crops[f] for k in scorable for f in sides[k]], issame, str(pairs_txt))
    if not issame.any() or issame.all():
        raise FormatError(pairs_txt, None, "both genuine and impostor pairs that can be scored")
    result, feats, sizes, _ = _run_pairs(embedder, pair_set, batch_size, nfolds, embedder.flip, None, num_workers,
                                         progress, desc=folder.name, far_levels=far_levels, strict=strict)
    metrics = result.to_dict()
    metrics["pairs_without_face"] = len(sides) - len(scorable)
    provenance = {
        "files": {str(pairs_txt): sha256_file(pairs_txt)},
        "protocol": {"name": "insightface pair verification", "nfolds": nfolds,
                     "thresholds": "0..4 step 0.01 on squared L2 distance", "flip": embedder.flip},
        "faces": ({"detector": detector, "face": "the largest of each photo", "filter": face_filter or {},
                   "photos_without_face": no_face} if detect is not None else "the images as they are"),
        "pairs": len(sides),
        "pairs_scored": len(scorable),
        "num_images": len(feats.plain),
        "input_sizes": sizes,
        "seconds": round(feats.seconds, 3),
    }
    return TargetResult(target, "pairs", metrics, provenance, pair_score_curves(feats.fused(), issame,
                                                                                result.threshold))
