"""Fixtures of the detector tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mtcnn_weights():
    """The installed MTCNN weight files (facenet-pytorch's wheel); the test is skipped without them."""
    from cdface.detect.mtcnn_weights import mtcnn_weight_files
    from cdface.errors import CdfaceError

    try:
        return mtcnn_weight_files()
    except CdfaceError as exc:
        pytest.skip(str(exc))
