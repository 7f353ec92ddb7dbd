"""Landmark files with several lines (faces) for one photo (`read_landmark_file(..., several=True)`)."""

from __future__ import annotations

import pytest

from cdface.data.landmarks import read_landmark_file
from cdface.errors import FormatError


def test_landmark_file_with_several_faces_per_image(tmp_path):
    pts = [" ".join(str(v + 100 * k) for v in range(10)) for k in range(3)]
    (tmp_path / "lmk.txt").write_text(f"a.jpg {pts[0]}\nb.jpg {pts[1]}\na.jpg {pts[2]}\na.jpg {pts[0]}\n")
    table = read_landmark_file(tmp_path / "lmk.txt", several=True)
    assert table["a.jpg"].shape == (2, 5, 2) and table["b.jpg"].shape == (1, 5, 2)
    assert table["a.jpg"][1, 0].tolist() == [200.0, 201.0]  # file order; the repeated first line is one face
    with pytest.raises(FormatError, match="line 3"):  # without `several`: one line per image, as before
        read_landmark_file(tmp_path / "lmk.txt")
