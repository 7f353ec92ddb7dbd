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
from cdface.data.pairs_bin import decode_pairs, dumps_bin, load_bin, loads_bin, make_bin_from_folder, write_bin
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
    with pytest.raises(FormatError, match="issame"):
        loads_bin(pickle.dumps(([b"a", b"b"], [1]), protocol=3))
    with pytest.raises(FormatError, match="images"):
        loads_bin(pickle.dumps((["a", "b"], [True]), protocol=3))
    with pytest.raises(UnsafeFileError, match="only bool dtypes"):
        loads_bin(pickle.dumps(([b"a", b"b"], np.array([1])), protocol=2))


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
