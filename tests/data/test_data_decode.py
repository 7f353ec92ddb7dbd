"""decode_image applies EXIF orientation exactly as OpenCV's imdecode/imread (the reference decoders of the
field's tools and of the detectors that produce landmark files), for JPEG (simplejpeg path) and PNG (Pillow)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from cdface.data.decode import decode_image, decode_image_pil


def _with_orientation(image: np.ndarray, orientation: int, fmt: str) -> bytes:
    pil = Image.fromarray(image)
    exif = pil.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    pil.save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv(fmt, orientation):
    # 8x8 flat blocks of random colours, 24x40: every orientation gives a different, JPEG-exact picture
    blocks = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3))
    image = np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8)
    data = _with_orientation(image, orientation, fmt)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    for decoder in (decode_image, decode_image_pil):
        got = decoder(data)
        assert got.shape == reference.shape == ((24, 40, 3) if orientation <= 4 else (40, 24, 3))
        assert np.abs(got.astype(int) - reference).max() <= 1
        assert got.flags["C_CONTIGUOUS"]

