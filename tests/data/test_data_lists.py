"""Image lists: cdface's '<path> <label>', mxnet im2rec's .lst and insightface's .lst (aligned flag first)."""

from __future__ import annotations

import numpy as np
import pytest

from cdface.data.datasets import ImageListDataset
from cdface.data.decode import encode_jpeg
from cdface.data.lists import read_image_list
from cdface.errors import FormatError

ITEMS = [("a/x 1.jpg", 3), ("b/y.jpg", 0), ("a/z.png", 3)]  # a path with a space


def _mxnet_line(index: int, path: str, labels: list[float]) -> str:
    """tools/im2rec.py write_list: index, '%f' labels, path, tab-separated."""
    return f"{index}\t" + "\t".join(f"{v:f}" for v in labels) + f"\t{path}\n"


def _insightface_line(path: str, label: int) -> str:
    """insightface's list writers (face2rec2.py read_list): '%d\\t%s\\t%d' % (aligned=1, path, label)."""
    return "%d\t%s\t%d\n" % (1, path, label)  # noqa: UP031 - insightface's own format string


@pytest.mark.parametrize("form", ["plain", "mxnet", "mxnet-multi-label", "insightface"])
def test_every_list_form_gives_the_same_paths_and_labels(tmp_path, form):
    if form == "plain":
        text = "# path label\n" + "".join(f"{p} {c}\n" for p, c in ITEMS)
    elif form == "mxnet":
        text = "".join(_mxnet_line(i, p, [c]) for i, (p, c) in enumerate(ITEMS))
    elif form == "mxnet-multi-label":  # --pack-label lists: the class comes first
        text = "".join(_mxnet_line(i, p, [c, 0.0, 1.5]) for i, (p, c) in enumerate(ITEMS))
    else:
        text = "".join(_insightface_line(p, c) for p, c in ITEMS)
    lst = tmp_path / "train.lst"
    lst.write_text(text)
    paths, labels = read_image_list(lst)
    assert [str(p.relative_to(tmp_path)) for p in paths] == [p for p, _ in ITEMS]
    assert labels.tolist() == [c for _, c in ITEMS]


def test_insightface_list_trains_on_the_right_files(tmp_path):
    """The aligned flag is not taken into the path (the reported misparse): images load, none is corrupt."""
    for i, (path, _) in enumerate(ITEMS):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(encode_jpeg(np.full((112, 112, 3), 40 * (i + 1), np.uint8)))
    lst = tmp_path / "train.lst"
    lst.write_text("".join(_insightface_line(p, c) for p, c in ITEMS))
    ds = ImageListDataset(lst)
    assert ds.class_ids[ds.labels].tolist() == [3, 0, 3]
    for i in range(3):
        assert ds[i][3] == -1 and abs(int(ds.load_image(i).mean()) - 40 * (i + 1)) <= 2


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("1\ta.jpg\t3\n0\tb.jpg\t4\t1\t2\t3\t4\n", 2, "unaligned"),  # insightface unaligned entry
        ("0\t3.000000\ta.jpg\n1\tb.jpg\t2\n", 2, "mxnet form"),  # forms mixed
        ("0\t3.5\ta.jpg\n", 1, "mxnet form"),  # a class must be an integer
        ("1\t5\t7\n", 1, "one of the forms"),  # ambiguous: no field is a path
        ("a.jpg 1\n1\tb.jpg\t2\n", 2, "plain form"),
        ("a.jpg\n", 1, "one of the forms"),
    ],
)
def test_unreadable_list_names_file_line_and_the_forms(tmp_path, text, line, what):
    lst = tmp_path / "faces.lst"
    lst.write_text(text)
    with pytest.raises(FormatError, match=rf"faces\.lst, line {line}: .*{what}") as info:
        ImageListDataset(lst)
    if what != "unaligned":
        assert "'<path> <label >= 0>'" in str(info.value) and "insightface '1\\t<path>\\t<label>'" in str(info.value)
