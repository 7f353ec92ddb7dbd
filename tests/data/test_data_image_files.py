"""Folders and lists people have (issue 24, item 9): macOS/Windows metadata ignored and counted, `\\` separators
in lists, and one answer to "is this an image" for folder scans and single files (GIF included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cdface.cli import main
from cdface.data.datasets import ImageFolderDataset
from cdface.data.image_files import IMAGE_EXTENSIONS, is_image_file, scan_image_folder
from cdface.data.image_sources import resolve_image_source
from cdface.data.lists import read_image_list


def _crop(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((112, 112, 3), value, np.uint8)).save(path)


def _mac_copy(root):
    """Two classes of 2 crops each, as a zip made on a Mac unpacks: ._ forks, .DS_Store, __MACOSX/."""
    for c, cls in enumerate(("ann", "bob")):
        for i in range(2):
            _crop(root / cls / f"{i}.jpg", 40 * c + i)
            (root / cls / f"._{i}.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # resource fork
            (root / "__MACOSX" / cls / f"._{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
            (root / "__MACOSX" / cls / f"._{i}.jpg").write_bytes(b"\x00\x05\x16\x07")
        (root / cls / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "ann" / "notes.txt").write_text("not an image")


def test_image_folder_ignores_mac_metadata_and_counts_it(tmp_path):
    _mac_copy(tmp_path)
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.class_names == ["ann", "bob"] and len(dataset) == 4  # not 3 classes, not 8+ images
    assert dataset.scan.ignored == 2 + 2 * 3 and dataset.scan.other == 1  # root: .DS_Store, __MACOSX/
    assert "8 hidden/system entries" in dataset.scan.note() and "1 file without an image suffix" in dataset.scan.note()
    for i in range(len(dataset)):
        dataset.load_image(i)  # every listed file is a real image


def test_data_pack_and_inspect_of_a_mac_folder(tmp_path, capsys):
    _mac_copy(tmp_path / "faces")
    assert main(["data", "pack", str(tmp_path / "faces"), str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out
    assert "packed 4 images of 2 classes" in out and "ignored 8 hidden/system entries" in out
    assert main(["data", "inspect", str(tmp_path / "faces"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["classes"] == 2 and summary["ignored"] == 8


def test_embed_folder_source_skips_metadata_and_takes_gif(tmp_path):
    _mac_copy(tmp_path)
    Image.fromarray(np.full((112, 112, 3), 200, np.uint8)).save(tmp_path / "bob" / "anim.gif")
    source = resolve_image_source(tmp_path)
    assert sorted(p.name for p in source.paths) == ["0.jpg", "0.jpg", "1.jpg", "1.jpg", "anim.gif"]
    assert source.scan is not None and source.scan.ignored == 8
    # the single-file path and the folder scan agree on GIF
    assert is_image_file(tmp_path / "bob" / "anim.gif") and ".gif" in IMAGE_EXTENSIONS
    assert resolve_image_source(tmp_path / "bob" / "anim.gif").kind == "image"


def test_hidden_folders_are_skipped_whole(tmp_path):
    _crop(tmp_path / "a" / "x.png", 1)
    _crop(tmp_path / ".ipynb_checkpoints" / "x.png", 2)
    _crop(tmp_path / "a" / ".cache" / "y.png", 3)
    scan = scan_image_folder(tmp_path)
    assert scan.files == [tmp_path / "a" / "x.png"] and scan.ignored == 2


def test_is_image_file_reads_content_not_names(tmp_path):
    (tmp_path / "sound.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # RIFF, but not WebP
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.webp")
    assert not is_image_file(tmp_path / "sound.wav") and is_image_file(tmp_path / "a.webp")


def test_windows_separators_in_lists(tmp_path):
    _crop(tmp_path / "ann" / "0.jpg", 1)
    _crop(tmp_path / "bob" / "1.jpg", 2)
    (tmp_path / "train.lst").write_text("ann\\0.jpg 0\r\nbob\\1.jpg 1\r\n")
    paths, labels = read_image_list(tmp_path / "train.lst")
    assert paths == [tmp_path / "ann" / "0.jpg", tmp_path / "bob" / "1.jpg"] and labels.tolist() == [0, 1]
    (tmp_path / "list.txt").write_text("ann\\0.jpg\nbob\\1.jpg\n")
    assert list(resolve_image_source(tmp_path / "list.txt").paths) == paths


def test_jpeg_suffixes_windows_and_browsers_write_are_scanned(tmp_path):
    # Chrome/Edge on Windows save JPEGs as .jfif; .jpe is the third JPEG suffix. Each alone was embedded (by its
    # content) while a folder scan passed it over as "a file without an image suffix"
    for name in ("a.jfif", "b.JPE", "c.jpg"):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / name, format="JPEG")
        assert is_image_file(tmp_path / name)
    scan = scan_image_folder(tmp_path)
    assert [p.name for p in scan.files] == ["a.jfif", "b.JPE", "c.jpg"] and scan.other == 0


def test_symlinked_folders_are_scanned_and_loops_are_not_followed(tmp_path):
    # an album linked into a gallery was passed over without a word (os.walk does not follow links by default)
    _crop(tmp_path / "gallery" / "ann" / "x.png", 1)
    _crop(tmp_path / "elsewhere" / "bob" / "y.png", 2)
    try:
        (tmp_path / "gallery" / "bob").symlink_to(tmp_path / "elsewhere" / "bob", target_is_directory=True)
        (tmp_path / "gallery" / "ann" / "up").symlink_to(tmp_path / "gallery", target_is_directory=True)  # a loop
    except OSError:
        pytest.skip("no symlinks here")
    scan = scan_image_folder(tmp_path / "gallery")
    assert [p.relative_to(tmp_path / "gallery").as_posix() for p in scan.files] == ["ann/x.png", "bob/y.png"]
