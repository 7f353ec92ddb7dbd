"""One pixel cap for every decoder and reader, checked on the image header before any pixel is decoded.

The oversized images are 12000x12000 (144 M pixels; 432 MB as RGB) but about 1 MB on disk
(huge_images.py writes them from the JPEG and PNG definitions). Peak memory is measured with
``resource.getrusage`` in a fresh subprocess, so a reader that decoded first and complained afterwards
would fail the bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from huge_images import flat_gray_jpeg, flat_gray_png

from cdface.data.datasets import RecordIODataset
from cdface.data.decode import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, ImageTooLargeError, decode_image
from cdface.data.recordio_writer import write_insightface_rec
from cdface.errors import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src"
HUGE = 12000


def test_builders_write_valid_flat_images():
    """The test images are real: Pillow and libjpeg-turbo decode small ones to the flat grey 128."""
    import io

    import simplejpeg
    from PIL import Image

    for w, h in ((40, 24), (17, 9)):
        jpeg, png = flat_gray_jpeg(w, h), flat_gray_png(w, h)
        for image in (decode_image(jpeg), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")),
                      simplejpeg.decode_jpeg(jpeg, colorspace="RGB"), decode_image(png)):
            assert image.shape == (h, w, 3) and image.min() == image.max() == 128
    big = flat_gray_jpeg(HUGE, HUGE)
    assert len(big) < 3_000_000 and simplejpeg.decode_jpeg_header(big)[:2] == (HUGE, HUGE)


def test_cap_setting_config_env_and_argument(monkeypatch):
    image = flat_gray_jpeg(1200, 1000)  # 1.2 M pixels
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert decode_image(image).shape == (1000, 1200, 3)  # under the default
    with pytest.raises(ImageTooLargeError, match=r"x\.rec, record 4: an image of at most 1000000 pixels.*1200x1000"):
        decode_image(image, "x.rec", "record 4", max_pixels=1_000_000)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1_000_000")
    with pytest.raises(ImageTooLargeError, match=r"1200x1000 = 1200000 pixels.*CDFACE_MAX_IMAGE_PIXELS"):
        decode_image(image)
    assert decode_image(image, max_pixels=2_000_000).shape == (1000, 1200, 3)  # the argument (config) wins
    with pytest.raises(ImageTooLargeError, match="1200x1000"):
        decode_image(flat_gray_png(1200, 1000))  # Pillow's path: the same cap
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match="CDFACE_MAX_IMAGE_PIXELS must be a positive integer"):
        decode_image(image)
    assert DEFAULT_MAX_IMAGE_PIXELS < HUGE * HUGE


def test_config_key_reaches_the_training_dataset(tmp_path):
    from cdface.config import config_from_dict

    with pytest.raises(ConfigError, match="data.max_image_pixels"):
        config_from_dict({"data": {"max_image_pixels": -1}})
    jpegs = [flat_gray_jpeg(1200, 1000), flat_gray_jpeg(112, 112), flat_gray_jpeg(112, 112)]
    rec = write_insightface_rec(tmp_path, [0, 0, 1], jpegs)["rec"]
    ds = RecordIODataset(rec, cache_labels=False, max_pixels=1_000_000)
    assert ds[0][2:] == (1, 0) and ds.num_bad == 1  # substituted by the other image of class 0, counted
    assert RecordIODataset(rec, cache_labels=False)[0][2:] == (0, -1)  # the default cap lets it through


_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    import torch
    from cdface.data.cli import inspect_path
    from cdface.data.datasets import ImageFolderDataset, ImageListDataset, RecordIODataset
    from cdface.data.decode import decode_image
    from cdface.data.pairs_bin import decode_pairs, load_bin
    from cdface.inference.extract import ImageFiles
    from cdface.eval import verify_pairs
    from cdface.models import create_model
    from cdface.errors import FormatError

    root = Path(sys.argv[1])
    model = create_model("iresnet_tiny", embedding_size=8).eval()
    out = {}

    def attempt(name, call):
        try:
            value = call()
        except FormatError as exc:
            value = "error: " + str(exc)
        out[name] = value if isinstance(value, (str, int, list)) else repr(value)

    # warm-up on small files: every lazy allocation (threads, model, decoder) happens before the baseline
    verify_pairs(model, root / "small.bin", device="cpu", nfolds=2)
    RecordIODataset(root / "rec", cache_labels=False)[0]
    ImageFolderDataset(root / "folder")[1]
    inspect_path(root / "small.bin", check=True)
    base = peak_mb()
    big_jpeg, big_png = (root / "folder/a/huge.jpg").read_bytes(), (root / "folder/b/huge.png").read_bytes()
    attempt("decode_jpeg", lambda: decode_image(big_jpeg, "huge.jpg").shape)
    attempt("decode_png", lambda: decode_image(big_png, "huge.png").shape)
    attempt("bin_decode_pairs", lambda: decode_pairs(load_bin(root / "huge.bin")).shape)
    attempt("eval_verify_pairs", lambda: verify_pairs(model, root / "huge.bin", device="cpu", nfolds=2))
    def embed_item(item):  # a dataset item carries its refusal to the main process, which raises it
        if isinstance(item[2], FormatError):
            raise item[2]
        return item[1].shape

    attempt("embed_image_files", lambda: embed_item(ImageFiles([root / "folder/a/huge.jpg"])[0]))
    rec = RecordIODataset(root / "rec", cache_labels=False)
    attempt("train_recordio_item", lambda: list(rec[1][1:]) + [rec.num_bad])
    folder = ImageFolderDataset(root / "folder")
    attempt("train_folder_items", lambda: [list(folder[i][2:]) for i in range(len(folder))])
    listed = ImageListDataset(root / "train.lst")
    attempt("train_list_items", lambda: [list(listed[i][2:]) for i in range(len(listed))])
    attempt("inspect_bin", lambda: inspect_path(root / "huge.bin", check=True)["bad_images"])
    attempt("inspect_rec", lambda: inspect_path(root / "rec", check=True)["bad_records"])
    out["peak_over_baseline_mb"] = peak_mb() - base
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def huge_files(tmp_path_factory) -> Path:
    from cdface.data.decode import encode_jpeg
    from cdface.data.pairs_bin import write_bin

    root = tmp_path_factory.mktemp("huge")
    rng = np.random.default_rng(0)
    small = [encode_jpeg(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in range(8)]
    big_jpeg, big_png = flat_gray_jpeg(HUGE, HUGE), flat_gray_png(HUGE, HUGE)
    write_bin(root / "small.bin", small[:4], [True, False])
    write_bin(root / "huge.bin", [big_jpeg] + small[1:8], [True, False, True, False])
    write_insightface_rec(root / "rec", [0, 0, 1, 1], [small[0], big_jpeg, small[2], small[3]])
    for cls, name, data in (("a", "ok.jpg", small[0]), ("a", "huge.jpg", big_jpeg),
                            ("b", "ok.jpg", small[1]), ("b", "huge.png", big_png)):
        (root / "folder" / cls).mkdir(parents=True, exist_ok=True)
        (root / "folder" / cls / name).write_bytes(data)
    (root / "train.lst").write_text("folder/a/ok.jpg 0\nfolder/b/huge.png 1\nfolder/b/ok.jpg 1\n")
    return root


def test_every_reader_refuses_before_decoding_with_bounded_memory(huge_files):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop(MAX_PIXELS_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(huge_files)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    size = f"{HUGE}x{HUGE} = {HUGE * HUGE} pixels"
    assert got["decode_jpeg"].startswith("error: huge.jpg: an image of at most") and size in got["decode_jpeg"]
    assert got["decode_png"].startswith("error: huge.png: an image of at most") and size in got["decode_png"]
    for name in ("bin_decode_pairs", "eval_verify_pairs"):  # evaluation: an error naming file and pair image
        assert got[name].startswith(f"error: {huge_files / 'huge.bin'}, image 0: an image of at most"), got[name]
        assert size in got[name]
    assert got["embed_image_files"].startswith(f"error: {huge_files / 'folder/a/huge.jpg'}: ")
    # training: substituted by another image of the class and counted, as a corrupt image is
    assert got["train_recordio_item"] == [0, 0, 1, 1]  # (label, used index, bad index), bad count
    # sorted: a/huge.jpg, a/ok.jpg, b/huge.png, b/ok.jpg; (used index, bad index)
    assert got["train_folder_items"] == [[1, 0], [1, -1], [3, 2], [3, -1]]
    assert got["train_list_items"] == [[0, -1], [2, 1], [2, -1]]
    [bad_bin] = got["inspect_bin"]
    assert bad_bin["index"] == 0 and "huge.bin, image 0" in bad_bin["error"] and size in bad_bin["error"]
    [bad_rec] = got["inspect_rec"]
    assert bad_rec["index"] == 1 and "train.rec, record 2" in bad_rec["error"] and size in bad_rec["error"]
    # one decoded 12000x12000 image would add >= 144 MB (grey) and 432 MB (RGB)
    assert got["peak_over_baseline_mb"] < 100, got


def test_inspect_cli_lists_oversized_images(tmp_path, capsys):
    import argparse

    from cdface.data import cli
    from cdface.data.pairs_bin import write_bin

    write_bin(tmp_path / "val.bin", [flat_gray_jpeg(112, 112), flat_gray_jpeg(1200, 1000)] * 2, [True, False])
    parser = argparse.ArgumentParser(prog="cdface")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "inspect", str(tmp_path / "val.bin"), "--check", "--max-image-pixels", "1000000"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "bad_images: 2" in out
    assert "val.bin, image 1: an image of at most 1000000 pixels, its header declares 1200x1000" in out
    assert "val.bin, image 3:" in out


@pytest.mark.parametrize("workers", [0, 2])
def test_pair_set_evaluation_stops_on_a_refused_image_with_or_without_workers(tmp_path, monkeypatch, workers):
    """The refusal reaches the caller as the same error from DataLoader workers too, never as a missing pair."""
    from cdface.data.pairs_bin import write_bin
    from cdface.errors import FormatError
    from cdface.eval import verify_pairs
    from cdface.models import create_model

    images = [flat_gray_jpeg(112, 112)] * 3 + [flat_gray_jpeg(200, 112)]  # image 3: 22400 pixels
    path = write_bin(tmp_path / "cfp_fp.bin", images, [True, False])
    monkeypatch.setenv(MAX_PIXELS_ENV, "20000")  # workers inherit the environment
    model = create_model("iresnet_tiny", embedding_size=8).eval()
    with pytest.raises(FormatError, match=r"cfp_fp\.bin, image 3: an image of at most 20000 pixels.*200x112") as info:
        verify_pairs(model, path, device="cpu", nfolds=2, batch_size=2, num_workers=workers)
    assert type(info.value) is ImageTooLargeError and "Traceback" not in str(info.value)
