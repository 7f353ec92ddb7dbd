"""Margin heads: a normalised-linear core (cosines) plus one margin module per method."""

from cdface.embedding import normalized_cosine  # the heads' cosine; public here as before

from .adaface import AdaFaceMargin
from .arcface import ArcFaceMargin
from .combined import CombinedMargin
from .cosface import CosFaceMargin
from .curricularface import CurricularFaceMargin
from .head import MARGINS, MarginHead, create_head, create_margin
from .magface import MagFaceMargin
from .margin import Margin
from .normalized_linear import NormalizedLinear
from .output import HeadOutput

__all__ = [
    "MARGINS",
    "AdaFaceMargin",
    "ArcFaceMargin",
    "CombinedMargin",
    "CosFaceMargin",
    "CurricularFaceMargin",
    "HeadOutput",
    "MagFaceMargin",
    "Margin",
    "MarginHead",
    "NormalizedLinear",
    "create_head",
    "create_margin",
    "normalized_cosine",
]
