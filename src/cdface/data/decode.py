"""Image bytes <-> uint8 RGB arrays.

JPEG goes through simplejpeg (libjpeg-turbo, releases the GIL; fastest here, see
benchmarks/data_throughput.py); everything else (PNG, BMP, CMYK JPEGs simplejpeg refuses) through Pillow.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cdface.errors import FormatError

try:
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dependency, Pillow still works
    simplejpeg = None

__all__ = ["decode_image", "decode_image_pil", "encode_jpeg", "is_jpeg"]

_MAX_PIXELS = 64_000_000  # refuse decompression bombs before allocating


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def decode_image(data: bytes, source: object = "<memory>", where: str | None = None) -> np.ndarray:
    """Decode to a (H, W, 3) uint8 RGB array; FormatError naming ``source``/``where`` if invalid."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise FormatError(source, where, "non-empty encoded image bytes")
    if simplejpeg is not None and is_jpeg(data):
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except (ValueError, RuntimeError, SystemError, MemoryError):
            pass  # CMYK or an odd JPEG: let Pillow try, it raises the final error
    return decode_image_pil(data, source, where)


def decode_image_pil(data: bytes, source: object = "<memory>", where: str | None = None) -> np.ndarray:
    """Pillow decode (reference decoder and fallback for non-JPEG formats)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > _MAX_PIXELS:
                raise FormatError(source, where, f"an image under {_MAX_PIXELS} pixels, got {img.size}")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: keep the high byte, as OpenCV/mxnet do
                img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            rgb = img.convert("RGB")
    except FormatError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise FormatError(source, where, f"a decodable image (JPEG/PNG/...): {type(exc).__name__}: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encode a (H, W, 3) uint8 RGB array as baseline JPEG (4:2:0, like the field's training files)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a (H, W, 3) uint8 image, got shape {image.shape}")
    if simplejpeg is not None:
        return simplejpeg.encode_jpeg(image, quality=quality, colorspace="RGB", colorsubsampling="420")
    buf = io.BytesIO()  # pragma: no cover
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
