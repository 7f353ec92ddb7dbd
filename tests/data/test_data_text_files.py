"""Text files a user writes (image lists, landmark files, LFW pairs.txt, IJB lists) saved by a Windows editor
start with a UTF-8 byte-order mark; it must not become part of the first path, name or number."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cdface.data.image_sources import resolve_image_source
from cdface.data.landmarks import read_landmark_file
from cdface.data.lfw_pairs import read_lfw_pairs
from cdface.data.lists import read_image_list
from cdface.eval.ijb_meta import read_template_media_list

BOM = "\ufeff"


def test_byte_order_mark_is_not_part_of_the_first_entry(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a b.jpg")
    (tmp_path / "images.txt").write_text(BOM + "a b.jpg\r\n", encoding="utf-8")
    assert list(resolve_image_source(tmp_path / "images.txt").paths) == [tmp_path / "a b.jpg"]

    (tmp_path / "train.lst").write_text(BOM + "a b.jpg 3\n", encoding="utf-8")
    paths, labels = read_image_list(tmp_path / "train.lst")
    assert paths == [tmp_path / "a b.jpg"] and labels.tolist() == [3]

    (tmp_path / "lmk.txt").write_text(BOM + "a.jpg" + " 1" * 10 + "\n", encoding="utf-8")
    assert list(read_landmark_file(tmp_path / "lmk.txt")) == ["a.jpg"]

    (tmp_path / "pairs.txt").write_text(BOM + "1 1\nAnn 1 2\n", encoding="utf-8")
    assert read_lfw_pairs(tmp_path / "pairs.txt") == [("Ann", 1, "Ann", 2)]

    (tmp_path / "tid_mid.txt").write_text(BOM + "img/1.jpg 7 70\n", encoding="utf-8")
    names, templates, medias = read_template_media_list(tmp_path / "tid_mid.txt")
    assert names.tolist() == ["img/1.jpg"] and templates.tolist() == [7] and medias.tolist() == [70]


def test_landmark_file_paths_may_hold_spaces_with_or_without_a_score(tmp_path):
    import pytest

    from cdface.errors import FormatError

    coords = " ".join(str(v) for v in range(1, 11))
    (tmp_path / "lmk.txt").write_text(
        f"my photos/a b.jpg {coords}\n"  # a space in the folder and the name, no score
        f"my photos/c.jpg {coords} 0.99\n"  # with a score
        f"plain.jpg\t{coords}\n",
        encoding="utf-8",
    )
    table = read_landmark_file(tmp_path / "lmk.txt")
    assert sorted(table) == ["my photos/a b.jpg", "my photos/c.jpg", "plain.jpg"]
    for value in table.values():
        assert value.tolist() == np.arange(1, 11, dtype=float).reshape(5, 2).tolist()
    (tmp_path / "bad.txt").write_text("a.jpg 1 2 3\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad\.txt, line 1: 'image x1 y1 \.\.\. x5 y5 \[score\]', got 4 fields"):
        read_landmark_file(tmp_path / "bad.txt")
    (tmp_path / "word.txt").write_text(f"a.jpg {coords.replace('7', 'seven')}\n", encoding="utf-8")
    with pytest.raises(FormatError, match="word.txt, line 1: 10 numeric landmark coordinates"):
        read_landmark_file(tmp_path / "word.txt")


def test_landmark_file_listing_an_image_twice_with_other_points_is_refused(tmp_path):
    import pytest

    from cdface.errors import FormatError

    coords = " ".join(str(v) for v in range(1, 11))
    other = " ".join(str(v) for v in range(2, 12))
    (tmp_path / "same.txt").write_text(f"a.jpg {coords}\na.jpg {coords}\n", encoding="utf-8")
    assert list(read_landmark_file(tmp_path / "same.txt")) == ["a.jpg"]  # a repeated identical line is harmless
    (tmp_path / "twice.txt").write_text(f"a.jpg {coords}\nb.jpg {coords}\na.jpg {other}\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"twice\.txt, line 3: one landmark line per image; a\.jpg is listed"):
        read_landmark_file(tmp_path / "twice.txt")
