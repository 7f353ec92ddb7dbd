"""No user mistake ends in a Python traceback: every `cdface` command answers a bad file or value with one
line naming the file (and the counts, where there are any) and exit status 2.

The sweep runs each mistake through `cdface.cli.main` (the entry point the console script calls); a subset,
one or more per command, also runs as `python -m cdface` in a fresh process, exactly as a user's shell does.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from inference_helpers import random_faces, run_cdface, tiny_net
from PIL import Image

from cdface.cli import main
from cdface.data.decode import encode_jpeg
from cdface.data.pairs_bin import write_bin
from cdface.inference.export import export_onnx


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A folder of typical wrong inputs: a 7-pair .bin, a text file, images, feature arrays, a tiny ONNX."""
    root = tmp_path_factory.mktemp("mistakes")
    faces = random_faces(20, seed=4)
    write_bin(root / "seven.bin", [encode_jpeg(f) for f in faces[:14]], [True, False] * 3 + [True])
    broken = [encode_jpeg(f) for f in faces]
    broken[12] = b"\xff\xd8\xff not a jpeg"
    write_bin(root / "corrupt.bin", broken, [True, False] * 5)
    (root / "text.txt").write_text("hello\n")
    (root / "empty.txt").write_text("# nothing here\n")
    Image.fromarray(faces[0]).save(root / "a.jpg")
    Image.fromarray(faces[1]).save(root / "b.jpg")
    rng = np.random.default_rng(0)
    np.save(root / "emb14.npy", rng.random((14, 16)).astype(np.float32))
    np.save(root / "same7.npy", np.array([1, 0, 1, 0, 1, 0, 1]))
    np.save(root / "half7.npy", np.array([1, 0.5, 1, 0, 1, 0, 1]))  # 0.5 is no flag: not "same"
    np.save(root / "text7.npy", np.array(["1", "0", "1", "0", "1", "0", "1"]))  # every string is truthy
    np.save(root / "complex14.npy", rng.random((14, 16)) + 1j)
    np.save(root / "half14.npy", np.arange(14) / 2)
    np.save(root / "dim0_14.npy", np.zeros((14, 0), np.float32))  # 14 embeddings of dimension 0
    np.save(root / "ids14.npy", np.arange(14) // 2)
    np.save(root / "g.npy", rng.random((5, 16)).astype(np.float32))
    np.save(root / "q8.npy", rng.random((2, 8)).astype(np.float32))
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (root / "emptydir").mkdir()
    for sub in ("twins/a", "twins/b"):  # two different images called x.jpg, landmarks keyed by that bare name
        (root / sub).mkdir(parents=True)
        Image.fromarray(faces[2 if sub.endswith("a") else 3]).save(root / sub / "x.jpg")
    (root / "twins_lmk.txt").write_text("x.jpg 38 52 74 52 56 72 42 92 70 92\n")
    (root / "badcard").mkdir()  # an ONNX model whose card holds an impossible preprocessing
    (root / "badcard" / "m.json").write_text('{"mean": "x", "std": [0, 0, 0]}')
    assert export_onnx(tiny_net(), root / "tiny.onnx", dynamic_batch=True).ok
    shutil.copy(root / "tiny.onnx", root / "badcard" / "m.onnx")
    (root / "empty.pt").write_bytes(b"")
    return root


# (argv with {d} for the fixture folder, a fragment the one-line message must contain)
MISTAKES = [
    ("score pairs --embeddings {d}/emb14.npy --issame {d}/same7.npy", "got 7 pairs"),
    ("score pairs --embeddings {d}/emb14.npy --issame {d}/same7.npy --nfolds 0", "--nfolds"),
    ("score pairs --embeddings {d}/text.txt --issame {d}/same7.npy", "text.txt"),
    ("score pairs --embeddings {d}/missing.npy --issame {d}/same7.npy", "missing.npy"),
    ("score pairs --embeddings {d}/objects.npy --issame {d}/same7.npy", "objects.npy"),
    ("score pairs --embeddings {d}/emb14.npy --issame {d}/same7.npy --nfolds 7 --far 0", "--far"),
    ("score ijb --features {d}/emb14.npy --meta-dir {d}/nowhere", "nowhere"),
    ("score megaface --probe {d}/emb14.npy --probe-labels {d}/same7.npy --distractors {d}/g.npy", "same7.npy"),
    ("score megaface --probe {d}/emb14.npy --probe-labels {d}/emb14.npy --distractors {d}/g.npy --sizes x", "x"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --workers 0", "seven.bin"),
    ("eval --model {d}/tiny.onnx --targets {d}/missing.bin --workers 0", "missing.bin"),
    ("eval --model {d}/text.txt --targets {d}/seven.bin --workers 0", "text.txt"),
    ("eval --model {d}/tiny.onnx --targets lfw --workers 0", "lfw"),
    ("eval --model {d}/tiny.onnx --targets ijbc --data-root {d}/nowhere --workers 0", "nowhere"),
    ("eval --model {d}/tiny.onnx --targets megaface --data-root {d}/nowhere --workers 0", "nowhere"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --input-mean 1,2", "--input-mean"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --input-std a,b,c", "--input-std"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --batch-size 0", "--batch-size"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --workers -1", "--workers"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --ijb-protocols 12", "--ijb-protocols"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --megaface-sizes ten", "--megaface-sizes"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --far 1e-3,2", "--far"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --device nonsense", "nonsense"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --device cuda:7", "cuda:7"),
    ("eval --model {d}/nowhere --targets {d}/seven.bin", "nowhere"),
    # a corrupt image found in a DataLoader worker process: still the image's one line, not torch's wrapper
    ("eval --model {d}/tiny.onnx --targets {d}/corrupt.bin --workers 2 --batch-size 4 --no-progress",
     "corrupt.bin, image 12"),
    ("embed {d}/text.txt --model {d}/tiny.onnx --out {d}/o.npy --workers 0", "text.txt"),
    ("embed {d}/empty.txt --model {d}/tiny.onnx --out {d}/o.npy --workers 0", "empty.txt"),
    ("embed {d}/emptydir --model {d}/tiny.onnx --out {d}/o.npy --workers 0", "emptydir"),
    ("embed {d}/missing --model {d}/tiny.onnx --out {d}/o.npy --workers 0", "missing"),
    ("embed {d}/emb14.npy --model {d}/tiny.onnx --out {d}/o.npy --workers 0", "emb14.npy"),
    ("embed {d}/a.jpg --model {d}/tiny.onnx --out {d}/o.npy --landmarks {d}/text.txt", "text.txt"),
    ("compare {d}/a.jpg {d}/text.txt --model {d}/tiny.onnx", "text.txt"),
    ("compare {d}/a.jpg {d}/b.jpg --model {d}/tiny.onnx --threshold 3", "--threshold"),
    ("compare {d}/a.jpg {d}/b.jpg --model {d}/tiny.onnx --threshold-from {d}/text.txt", "text.txt"),
    ("compare {d}/a.jpg {d}/b.jpg --model {d}/tiny.onnx --target lfw", "--target"),
    ("search --gallery {d}/text.txt --query {d}/g.npy", "text.txt"),
    ("search --gallery {d}/g.npy --query {d}/q8.npy", "dimension"),
    ("search --gallery {d}/g.npy --query {d}/g.npy --k 0", "--k"),
    ("search --gallery {d}/g.npy --query {d}/g.npy --gallery-paths {d}/text.txt", "text.txt"),
    ("search --gallery {d}/objects.npy --query {d}/g.npy", "objects.npy"),
    ("export --model {d}/text.txt --out {d}/x.onnx", "text.txt"),
    ("export --model {d}/tiny.onnx --out {d}/x.onnx", "tiny.onnx"),
    ("export --model {d}/tiny.onnx --out {d}/x.onnx --opset 0", "--opset"),
    ("models --embedding-size 0", "--embedding-size"),
    ("data inspect {d}/missing.rec", "missing.rec"),
    ("data inspect {d}/text.txt", "text.txt"),
    ("data pack {d}/missing {d}/packed", "missing"),
    ("data make-bin {d}/missing {d}/text.txt {d}/x.bin", "text.txt"),
    ("data synthetic {d}/syn --pairs 7 --identities 2 --images-per-id 2 --eval-identities 2", "num_pairs"),
    ("data extract {d}/text.txt --out {d}/ex", "text.txt"),
    ("data extract {d}/missing.rec --out {d}/ex", "missing.rec"),
    ("data extract {d}/missing.rec --out {d}/ex --classes x", "--classes"),
    ("data extract {d}/missing.rec --out {d}/ex --limit 0", "--limit"),
    ("train {d}/missing.yaml", "missing.yaml"),
    ("train {d}/text.txt", "text.txt"),
    ("bench memory --classes 0", "positive"),
    ("bench memory --classes 10 --model nope", "nope"),
    ("parallel import-insightface {d}/missing {d}/h.pt", "missing"),
    # --out naming an existing folder: refused before any work, not written as <folder>.npy beside it
    ("embed {d}/a.jpg --model {d}/tiny.onnx --out {d}/emptydir --workers 0", "emptydir is a folder"),
    ("search --gallery {d}/g.npy --query {d}/g.npy --out {d}/emptydir", "emptydir is a folder"),
    ("export --model {d}/tiny.onnx --out {d}/emptydir", "emptydir is a folder"),
    ("score pairs --embeddings {d}/emb14.npy --issame {d}/same7.npy --out {d}/emptydir", "emptydir is a folder"),
    ("data make-bin {d}/missing {d}/text.txt {d}/emptydir", "emptydir is a folder"),
    # arrays numpy would cast silently into wrong scores: refused by name
    ("score pairs --embeddings {d}/emb14.npy --issame {d}/half7.npy", "half7.npy: issame: genuine flags"),
    ("score pairs --embeddings {d}/emb14.npy --issame {d}/text7.npy", "text7.npy: issame: an array of numbers"),
    ("score pairs --embeddings {d}/complex14.npy --issame {d}/same7.npy", "got dtype complex128"),
    ("score rfw --race African {d}/emb14.npy {d}/half7.npy --nfolds 2", "half7.npy: African issame"),
    ("score erc --features {d}/emb14.npy --issame {d}/half7.npy", "half7.npy: issame: genuine flags"),
    ("score megaface --probe {d}/emb14.npy --probe-labels {d}/half14.npy --distractors {d}/g.npy",
     "half14.npy: probe labels: integer identities"),
    ("score pairs --embeddings {d}/emb14.npy --issame {d}/same7.npy --nfolds 7 --far-target 2", "--far-target"),
    ("compare {d}/emptydir {d}/a.jpg --model {d}/tiny.onnx", "emptydir: an image file (it is a folder"),
    ("eval --model {d}/badcard/m.onnx --targets {d}/seven.bin", "m.json: a valid input config"),
    ("embed {d}/a.jpg --model {d}/tiny.onnx --out {d}/seven.bin/sub/f.npy", "seven.bin is a file, not a folder"),
    # --out folders that are files: refused before the (possibly hours long) work, not when writing
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --out {d}/text.txt", "text.txt is a file"),
    ("eval --model {d}/tiny.onnx --targets {d}/seven.bin --out {d}/text.txt/res", "text.txt is a file, not a folder"),
    ("data pack {d}/missing {d}/text.txt", "text.txt is a file"),
    ("data extract {d}/missing.rec --out {d}/text.txt", "text.txt is a file"),
    # embeddings of dimension 0: no score means anything (pairs read 50% accuracy)
    ("score pairs --embeddings {d}/dim0_14.npy --issame {d}/same7.npy", "dim0_14.npy: an array of shape (2N, D)"),
    ("search --gallery {d}/dim0_14.npy --query {d}/dim0_14.npy", "dim0_14.npy: a numeric (N, D) array"),
    ("score megaface --probe {d}/dim0_14.npy --probe-labels {d}/ids14.npy --distractors {d}/g.npy", "dim0_14.npy"),
    ("embed {d}/twins --model {d}/tiny.onnx --out {d}/o.npy --landmarks {d}/twins_lmk.txt --workers 0",
     "x.jpg names 2 images"),
    ("score identification --probe {d}/dim0_14.npy --probe-labels {d}/same7.npy --gallery {d}/g.npy "
     "--gallery-labels {d}/same7.npy", "dim0_14.npy"),
    ("eval --model {d}/empty.pt --targets {d}/seven.bin", "empty.pt: a PyTorch state_dict or checkpoint readable by "
     "torch.load (the file is empty)"),
]


def _one_error_line(stderr: str, fragment: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cdface") and "error:" in line]
    assert len(errors) == 1, stderr  # argparse adds its usage line above; nothing else may be printed
    assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("argv,fragment", MISTAKES, ids=[m[0].split(" {")[0] + f"-{i}" for i, m in enumerate(MISTAKES)])
def test_mistake_is_one_line_and_exit_2(d, argv, fragment, capsys):
    args = argv.format(d=d).split()
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    assert rc == 2
    _one_error_line(capsys.readouterr().err, fragment)


# One or more per command, through a fresh interpreter: what the user sees, byte for byte.
SUBPROCESS = [0, 9, 15, 25, 26, 32, 36, 41, 44, 48, 50, 54, 56, 58]


@pytest.mark.parametrize("index", SUBPROCESS, ids=[MISTAKES[i][0].split(" {")[0] for i in SUBPROCESS])
def test_mistake_as_a_user_runs_it(d, index):
    argv, fragment = MISTAKES[index]
    proc = run_cdface(*argv.format(d=d).split())
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr, fragment)
    if index in (0, 9):  # the case: the file and both counts are named
        assert "seven.bin" in line or "same7.npy" in line
        assert "7 pairs" in line and "10" in line


def test_text_file_as_gallery_is_not_called_pickled(d, capsys):
    assert main(["search", "--gallery", str(d / "text.txt"), "--query", str(d / "g.npy")]) == 2
    err = capsys.readouterr().err
    # numpy's own message would claim "This file contains pickled (object) data"
    assert "contains pickled" not in err and "not a .npy at all (it looks like text)" in err


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(d, monkeypatch, capsys):
    import cdface.eval.cli as score_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(score_cli, "load_array", interrupted)
    code = main(["score", "pairs", "--embeddings", str(d / "emb14.npy"), "--issame", str(d / "same7.npy")])
    assert code == 130
    assert capsys.readouterr().err == "cdface score: interrupted\n"
