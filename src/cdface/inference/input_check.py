"""Say when inputs do not fit the model: wrong-size crops are resized bilinearly, which silently costs accuracy
(an unaligned 250x250 photo is not a face crop; a 112x112 set fed to a 128x128 model is not what it learnt).

The check runs once per target on the sizes the images had before they were fitted, logs one warning with the
counts, and under `strict` raises instead. Its summary goes into results.json's provenance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from cdface.errors import CdfaceError

__all__ = ["InputSizeError", "input_size_summary", "check_input_sizes", "OVERSIZE_FACTOR"]

logger = logging.getLogger("cdface.inference")

# A crop this many times larger than the model's input (either side) is a full photo, not a face crop.
OVERSIZE_FACTOR = 4

_ALIGN_HINT = (
    "aligned face crops at the model's input size are expected; for photos with 5-point landmarks use "
    "`cdface embed --landmarks FILE` (similarity alignment to the ArcFace template)"
)


class InputSizeError(CdfaceError):
    """`--strict`: images do not match the model's input size."""


def _fmt(size: Sequence[int]) -> str:
    return f"{int(size[0])}x{int(size[1])}"


def input_size_summary(size_counts: Mapping[tuple[int, int], int], model_size: Sequence[int]) -> dict[str, object]:
    """{"model_input_size", "image_sizes" {"HxW": count}, "resized", "oversized"} of a set of images."""
    h, w = int(model_size[0]), int(model_size[1])
    resized = sum(n for size, n in size_counts.items() if tuple(size) != (h, w))
    oversized = sum(n for (sh, sw), n in size_counts.items() if sh > OVERSIZE_FACTOR * h or sw > OVERSIZE_FACTOR * w)
    ordered = sorted(size_counts.items(), key=lambda item: -item[1])
    return {
        "model_input_size": [h, w],
        "image_sizes": {_fmt(size): int(n) for size, n in ordered},
        "resized": int(resized),
        "oversized": int(oversized),
    }


def check_input_sizes(
    size_counts: Mapping[tuple[int, int], int],
    model_size: Sequence[int],
    source: str,
    strict: bool = False,
    hint: str = _ALIGN_HINT,
) -> dict[str, object]:
    """Warn once (or raise InputSizeError under `strict`) when images were resized to the model's input.

    `size_counts` maps each (h, w) seen before fitting to its image count (`Features.size_counts`); images
    aligned with landmarks are not counted there. Returns `input_size_summary`.
    """
    summary = input_size_summary(size_counts, model_size)
    resized = int(summary["resized"])  # type: ignore[call-overload]
    if not resized:
        return summary
    total = sum(size_counts.values())
    sizes = summary["image_sizes"]
    assert isinstance(sizes, dict)
    shown = ", ".join(f"{n} at {s}" for s, n in list(sizes.items())[:4] if s != _fmt(model_size))
    message = (
        f"{source}: {resized} of {total} images do not match the model's input size {_fmt(model_size)} "
        f"({shown}) and were resized bilinearly"
    )
    if summary["oversized"]:
        message += (
            f"; {summary['oversized']} are over {OVERSIZE_FACTOR}x larger than the input (whole photos, not "
            "face crops?)"
        )
    message += f". {hint}"
    if strict:
        raise InputSizeError(message + " (--strict makes this an error)")
    logger.warning("%s; --strict makes this an error", message)
    return summary
