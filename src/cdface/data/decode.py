"""Image bytes <-> uint8 RGB arrays, with one pixel cap checked on the header before any pixel is decoded.

JPEG goes through simplejpeg (libjpeg-turbo, releases the GIL; fastest here, see
benchmarks/data_throughput.py); everything else (PNG, BMP, CMYK JPEGs simplejpeg refuses) through Pillow.

An image can be small on disk and huge in memory (a flat 12000x12000 JPEG is ~2 MB and decodes to
432 MB), so every decode first reads the image's size from its header (``simplejpeg.decode_jpeg_header``,
or Pillow's lazy ``Image.open``) and refuses images over the pixel cap. The cap is one setting for every
reader (``.bin`` pair sets, RecordIO, folders, lists, ``embed``, training, evaluation): the ``max_pixels``
argument (the training config's ``data.max_image_pixels``), else the ``CDFACE_MAX_IMAGE_PIXELS``
environment variable, else ``DEFAULT_MAX_IMAGE_PIXELS``. (Pillow itself refuses non-JPEG images over
2 x ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 M pixels, whatever the cap.)

EXIF orientation (tag 0x0112, phone photos) is applied as OpenCV's ``cv2.imread`` / ``cv2.imdecode`` apply it
(the decoders of insightface's tools and of the face detectors whose landmarks ``--landmarks`` files hold), so a
rotated photo is decoded upright; files without an EXIF block (the field's .rec and .bin images) are untouched.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from cdface.errors import ConfigError, FormatError

try:
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dependency, Pillow still works
    simplejpeg = None

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_PIXELS_ENV",
    "ImageTooLargeError",
    "decode_image",
    "decode_image_pil",
    "encode_jpeg",
    "is_jpeg",
    "resolve_max_pixels",
]

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # 192 MB as RGB: far above any face photo, far below a bomb
MAX_PIXELS_ENV = "CDFACE_MAX_IMAGE_PIXELS"


class ImageTooLargeError(FormatError):
    """An image whose header declares more pixels than the cap; nothing of it was decoded."""


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel cap in force: ``max_pixels`` if given (> 0), else ``$CDFACE_MAX_IMAGE_PIXELS``, else the default.

    Raises ``ConfigError`` naming the variable when it holds something that is not a positive integer.
    """
    if max_pixels is not None and int(max_pixels) > 0:
        return int(max_pixels)
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"${MAX_PIXELS_ENV} must be a positive integer pixel count, got {raw!r}")
    return int(raw)


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _check_size(width: int, height: int, cap: int, source: object, where: str | None) -> None:
    if width * height > cap:
        raise ImageTooLargeError(
            source,
            where,
            f"an image of at most {cap} pixels, its header declares {width}x{height} = {width * height} pixels "
            f"(refused before decoding; raise the cap with data.max_image_pixels or ${MAX_PIXELS_ENV})",
        )


def decode_image(
    data: bytes, source: object = "<memory>", where: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode to a (H, W, 3) uint8 RGB array.

    ``source``/``where`` name the file and the record/pair index in errors: ``FormatError`` for an
    undecodable image, ``ImageTooLargeError`` (a FormatError) for one over the pixel cap
    (``resolve_max_pixels(max_pixels)``), raised from the header before any pixel is decoded.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise FormatError(source, where, "non-empty encoded image bytes")
    cap = resolve_max_pixels(max_pixels)
    if simplejpeg is not None and is_jpeg(data):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(bytes(data))
        except (ValueError, RuntimeError, SystemError):
            pass  # Pillow reads the header below and gives the final answer
        else:
            _check_size(width, height, cap, source, where)
            try:
                image = simplejpeg.decode_jpeg(data, colorspace="RGB")
                return _oriented(image, _jpeg_orientation(data))
            except (ValueError, RuntimeError, SystemError, MemoryError):
                pass  # CMYK or an odd JPEG: let Pillow try, it raises the final error
    return decode_image_pil(data, source, where, cap)


EXIF_ORIENTATION = 0x0112


def _jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation of a JPEG (1 = upright); only JPEGs with an APP1 Exif block are parsed at all."""
    if bytes(data[:65536]).find(b"Exif\x00\x00") < 0:  # APP1 sits in the first segments, under 64 KiB
        return 1
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _orientation_of(img)
    except Exception:  # an EXIF block Pillow cannot read is ignored, as OpenCV ignores it
        return 1


def _orientation_of(img: Image.Image) -> int:
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF: ignored, as OpenCV does
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1..8 to an (H, W, C) array: the stored pixels -> the upright view (TIFF 6.0 /
    EXIF 2.3 definitions: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse,
    8 rotate 90 counter-clockwise)."""
    if orientation == 1:
        return image
    out = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, k=1),
    }[orientation](image)
    return np.ascontiguousarray(out)


def _open_pil(data: bytes, source: object, where: str | None) -> Image.Image:
    """``Image.open`` (header only). Pillow's own bomb check is left to ours, which names the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # over 2 * Image.MAX_IMAGE_PIXELS: Pillow's hard limit
        raise ImageTooLargeError(
            source, where, f"an image Pillow agrees to open (refused before decoding, whatever the cap): {exc}"
        ) from None
    except UnidentifiedImageError:
        raise FormatError(source, where, "a decodable image (JPEG/PNG/...): not a recognised image format") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise FormatError(source, where, f"a decodable image (JPEG/PNG/...): {type(exc).__name__}: {exc}") from None


def decode_image_pil(
    data: bytes, source: object = "<memory>", where: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Pillow decode (reference decoder and fallback for non-JPEG formats); same cap and errors."""
    cap = resolve_max_pixels(max_pixels)
    with _open_pil(data, source, where) as img:
        _check_size(img.width, img.height, cap, source, where)
        orientation = _orientation_of(img)
        try:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: keep the high byte, as OpenCV/mxnet do
                img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            rgb = img.convert("RGB")
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
            raise FormatError(source, where, f"a decodable image (JPEG/PNG/...): {type(exc).__name__}: {exc}") from None
    return _oriented(np.asarray(rgb, dtype=np.uint8), orientation)


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
