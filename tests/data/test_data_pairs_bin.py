"""insightface .bin pair files: safe loading, byte-exact writing, LFW pairs.txt, decoding."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdface.data.decode import encode_jpeg
from cdface.data.lfw_pairs import make_bin_from_folder
from cdface.data.pairs_bin import decode_pairs, dumps_bin, load_bin, loads_bin, write_bin
from cdface.errors import CdfaceError, FormatError, UnsafeFileError

REAL_BIN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "realfaces" / "pairs.bin"
needs_shared = pytest.mark.skipif(not REAL_BIN.is_file(), reason="../shared/data/realfaces/pairs.bin not present")


def _jpegs(n: int, size: int = 112, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@needs_shared
def test_real_bin_loads_decodes_and_rewrites_byte_exact(tmp_path):
    pairs = load_bin(REAL_BIN)
    assert len(pairs) == 600 and len(pairs.images) == 1200
    folds = pairs.issame.reshape(10, 60)
    assert folds[:, :30].all() and not folds[:, 30:].any()
    images = decode_pairs(pairs)
    assert images.shape == (1200, 112, 112, 3) and images.dtype == np.uint8
    assert write_bin(tmp_path / "copy.bin", pairs.images, pairs.issame).read_bytes() == REAL_BIN.read_bytes()


def test_round_trip_and_python_pickle_variants(tmp_path):
    images = [b"a" * 5, b"bb", b"", b"\x00\xff" * 300]
    issame = [True, False]
    path = write_bin(tmp_path / "x.bin", images, issame)
    loaded = load_bin(path)
    assert loaded.images == images and loaded.issame.tolist() == issame
    assert pickle.loads(dumps_bin(images, issame), encoding="bytes") == (images, issame)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        for flags in (issame, tuple(issame), np.array(issame)):
            got = loads_bin(pickle.dumps((tuple(images), flags), protocol=protocol))
            assert got.images == images and got.issame.tolist() == issame


def test_count_mismatch_and_wrong_types(tmp_path):
    with pytest.raises(FormatError, match="2 images per pair: 3 images for 2 pairs"):
        loads_bin(pickle.dumps(([b"a", b"b", b"c"], [True, False]), protocol=2), "f.bin")
    for flags in ([2], np.array([2]), [1.0], np.array([0.5]), ["yes"], np.array([[True]])):
        with pytest.raises(FormatError, match="issame"):
            loads_bin(pickle.dumps(([b"a", b"b"], flags), protocol=3))
    with pytest.raises(FormatError, match="image 1: encoded image bytes"):
        loads_bin(pickle.dumps(([b"a", "b"], [True]), protocol=3))
    with pytest.raises(FormatError, match="image 0: encoded image bytes .* got float32 array"):
        loads_bin(pickle.dumps(([np.zeros(3, np.float32), b"b"], [True]), protocol=4))


def _imencode_like(jpeg: bytes) -> np.ndarray:
    """What ``cv2.imencode(".jpg", img)[1]`` returns: a uint8 array of shape (nbytes, 1)."""
    return np.frombuffer(jpeg, dtype=np.uint8).reshape(-1, 1).copy()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_bin_of_numpy_arrays_loads_like_bytes_and_bools(protocol):
    """A .bin pickled from cv2.imencode arrays (and numpy issame) at any protocol reads like the field's files."""
    images = _jpegs(6, size=24, seed=protocol)
    reference = loads_bin(dumps_bin(images, [True, False, True]))
    encoded = [_imencode_like(b) for b in images]
    for flags in (
        [True, False, True],
        np.array([True, False, True]),
        np.array([1, 0, 1], dtype=np.int64),
        np.array([1, 0, 1], dtype=np.uint8),
        [np.bool_(True), np.bool_(False), np.bool_(True)],
        (np.int32(1), 0, True),
    ):
        for container in (list, tuple):
            got = loads_bin(pickle.dumps((container(encoded), flags), protocol=protocol), "val.bin")
            assert got.images == reference.images and got.issame.tolist() == reference.issame.tolist()
            np.testing.assert_array_equal(decode_pairs(got, size=24), decode_pairs(reference, size=24))
    flat = loads_bin(pickle.dumps(([e.ravel() for e in encoded], [1, 0, 1]), protocol=protocol))
    assert flat.images == reference.images
    fixed = loads_bin(pickle.dumps((np.array(images), np.array([1, 0, 1])), protocol=protocol))
    assert fixed.images == reference.images  # a numpy bytes array (JPEGs end in FFD9: no padding lost)


def test_python2_numpy_pickle_loads():
    """Python 2's numpy pickles: numpy.core module path, dtype("u1", 0, 1) with int flags, byte strings."""
    images = _jpegs(2, size=16)
    py3 = pickle.dumps(([_imencode_like(b) for b in images], np.array([True])), protocol=2)
    py2 = py3.replace(b"numpy._core.multiarray", b"numpy.core.multiarray").replace(b"\x89\x88\x87", b"K\x00K\x01\x87")
    for text in (b"u1", b"b1", b"|"):  # BINUNICODE -> SHORT_BINSTRING, as Python 2 wrote str
        py2 = py2.replace(b"X" + len(text).to_bytes(4, "little") + text, b"U" + bytes([len(text)]) + text)
    assert py2.count(b"K\x00K\x01") == 2 and b"numpy._core" not in py2
    got = loads_bin(py2)
    assert got.images == images and got.issame.tolist() == [True]


def test_bin_with_non_data_stays_refused():
    """Anything that would build an object other than plain data is refused before it is built."""
    img = _imencode_like(_jpegs(1, size=16)[0])
    for bad in (np.array([object(), 1], dtype=object), np.array(["text"]), np.zeros(2, dtype=[("a", "u1")])):
        for protocol in (2, 5):
            with pytest.raises(UnsafeFileError, match="refusing to unpickle numpy"):
                loads_bin(pickle.dumps(([img, img], bad), protocol=protocol))
    with pytest.raises(UnsafeFileError, match=r"global collections\.OrderedDict"):
        loads_bin(pickle.dumps(([img, img], __import__("collections").OrderedDict(a=True)), protocol=2))
    # numpy.ndarray resolves to an inert token: calling it (REDUCE) fails instead of building an array
    raw = b"\x80\x02cnumpy\nndarray\nK\x03\x85X\x02\x00\x00\x00u1\x86R."  # ndarray((3,), "u1")
    assert isinstance(pickle.loads(raw), np.ndarray)  # noqa: S301 - control: the plain unpickler builds it
    with pytest.raises(FormatError, match="not callable"):
        loads_bin(raw)
    buffers: list = []
    oob = pickle.dumps(([img, img], np.array([True])), protocol=5, buffer_callback=buffers.append)
    with pytest.raises(FormatError, match="valid pickle"):
        loads_bin(oob)  # out-of-band buffers are not in the file


def test_bin_of_numpy_arrays_scores_like_bytes(tmp_path, tiny_face_set):
    """Same images as cv2.imencode-style arrays at protocol 5: the same accuracy as the bytes-and-bools file."""
    from cdface.eval import verify_pairs
    from cdface.models import create_model

    ref = load_bin(tiny_face_set["bin"])
    other = tmp_path / "val.bin"
    other.write_bytes(pickle.dumps(([_imencode_like(b) for b in ref.images], ref.issame.astype(np.int64)), protocol=5))
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", embedding_size=8).eval()
    a = verify_pairs(model, tiny_face_set["bin"], device="cpu", nfolds=2)
    b = verify_pairs(model, other, device="cpu", nfolds=2)
    assert a.to_dict() == b.to_dict()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_bin_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    for payload in ([b"a", b"b"], [_Payload(marker)]), (_Payload(marker), [True]):
        evil.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(UnsafeFileError, match=r"evil\.bin.*(posix|os)\.system"):
            load_bin(evil)
    assert not marker.exists()


def test_make_bin_from_lfw_folder(tmp_path):
    root = tmp_path / "lfw"
    jpegs = iter(_jpegs(6, size=96))
    for name, count in (("Ann_A", 3), ("Bob_B", 2), ("Cy", 1)):
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(next(jpegs))
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("1\t3\nAnn_A\t1\t3\nBob_B\t1\t2\nAnn_A\t2\tCy\t1\n")
    out = make_bin_from_folder(root, pairs_txt, tmp_path / "lfw.bin")
    pairs = load_bin(out)
    assert pairs.issame.tolist() == [True, True, False]
    assert pairs.images[0] == (root / "Ann_A" / "Ann_A_0001.jpg").read_bytes()
    assert pairs.images[5] == (root / "Cy" / "Cy_0001.jpg").read_bytes()
    assert decode_pairs(pairs).shape == (6, 112, 112, 3)  # 96x96 resized
    pairs_txt.write_text("Ann_A\t1\t3\nAnn_A 1 x\n")
    with pytest.raises(FormatError, match=r"pairs\.txt, line 2"):
        make_bin_from_folder(root, pairs_txt, tmp_path / "bad.bin")
    pairs_txt.write_text("Ann_A\t1\t9\n")
    with pytest.raises(FormatError, match="pair 1"):
        make_bin_from_folder(root, pairs_txt, tmp_path / "bad.bin")


def test_decode_pairs_matches_single_decoding():
    from cdface.data.decode import decode_image

    images = _jpegs(8)
    pairs = loads_bin(dumps_bin(images, [True] * 4))
    batch = decode_pairs(pairs, num_threads=2)
    for i, data in enumerate(images):
        np.testing.assert_array_equal(batch[i], decode_image(data))
    broken = loads_bin(dumps_bin(images[:3] + [b"not an image"], [True, False]), "b.bin")
    with pytest.raises(FormatError, match=r"b\.bin, image 3"):
        decode_pairs(broken)


_SMALL = dumps_bin([b"abc", b"defg", b"", b"h"], [True, False])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_corrupted_bin_raises_only_project_errors(data):
    raw = bytearray(_SMALL)
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        result = loads_bin(bytes(raw))
    except CdfaceError:
        return
    assert len(result.images) == 2 * len(result)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(raw):
    try:
        loads_bin(b"\x80\x02" + raw)
    except CdfaceError:
        pass
