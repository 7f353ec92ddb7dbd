"""Fuzz the text/binary parsers not already fuzzed in tests/data: every input loads or raises a CdfaceError.

Budgets are FUZZ_EXAMPLES in reliability_cases.py (derandomised, so the same inputs every run). An input
taking longer than FUZZ_SECONDS_PER_INPUT fails as a hang. Exceptions that match a known, documented gap
(FUZZ_KNOWN_GAPS, each tied to an xfail case of the malformed table) are tolerated until that gap is fixed.
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_cases import FUZZ_EXAMPLES, FUZZ_KNOWN_GAPS, FUZZ_SECONDS_PER_INPUT, MALFORMED_CASES

from cdface.config import load_config
from cdface.errors import CdfaceError
from cdface.eval import ijb_meta, megaface_io

pytestmark = pytest.mark.filterwarnings("ignore:loadtxt. input contained no data")

TRICKY = ["0", "1", "-1", "7", "nan", "inf", "-inf", "1e400", "99999999999999999999", "1.5", "1_0", "\u0663",
          "", " ", "\t", ",", ";", "#", "\x00", "\r", "\n", "\\", "'", '"', "[", "]", "{", "}", ":", "- ",
          "TEMPLATE_ID", "SUBJECT_ID", "a.jpg", "img/b.jpg", "\xe9", "\ufeff"]
COUNTS: dict[str, int] = {}


def _fuzz_settings(name: str):
    return settings(max_examples=FUZZ_EXAMPLES[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    def hang(signum, frame):
        raise TimeoutError(f"parser still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run(name: str, call: Callable[[], object]) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1
    try:
        with _watchdog(FUZZ_SECONDS_PER_INPUT):
            call()
    except CdfaceError:
        return
    except TimeoutError:
        raise
    except Exception as exc:
        if type(exc).__name__ in FUZZ_KNOWN_GAPS.get(name, {}):
            return
        raise


@st.composite
def mutated(draw, base: str, encode: bool = True) -> bytes:
    """``base`` with a few token insertions/replacements/deletions, truncation, or raw byte flips."""
    text = base
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        token = draw(st.sampled_from(TRICKY) | st.text(max_size=4))
        if op == "insert":
            text = text[:pos] + token + text[pos:]
        elif op == "replace":
            end = min(len(text), pos + draw(st.integers(1, 6)))
            text = text[:pos] + token + text[end:]
        else:
            text = text[:pos] + text[pos + draw(st.integers(1, 8)):]
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(0, 2))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


TID_MID = "1.jpg 1 10\n2.jpg 1 11\n3.jpg 2 20\n4.jpg 3 30\n"
PAIRS = "1 2 1\n1 3 0\n2 3 0\n"
PTS = "".join(f"{i}.jpg 10 20 30 20 20 30 12 40 28 40 0.9\n" for i in range(1, 5))
CSV = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,7,img/1.jpg\n1,7,img/2.jpg\n"


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, base, reader",
    [
        pytest.param(f"ijb_meta.{reader.__name__}", base, reader, id=reader.__name__)
        for base, reader in [
            (TID_MID, ijb_meta.read_template_media_list),
            (PAIRS, ijb_meta.read_template_pair_list),
            (PTS, ijb_meta.read_name_5pts_score),
            (CSV, ijb_meta.read_template_subject_csv),
        ]
    ],
)
def test_fuzz_ijb_meta_file(tmp_path, name, base, reader):
    @_fuzz_settings(name)
    @given(raw=mutated(base))
    def run(raw):
        path = _write(tmp_path, "meta.txt", raw)
        _run(name, lambda: reader(path))

    COUNTS.pop(name, None)
    run()
    assert COUNTS[name] >= FUZZ_EXAMPLES[name]


def test_fuzz_ijb_meta_directory(tmp_path):
    name = "ijb_meta.load_ijb_meta + load_ijb_1n_meta"
    files = ijb_meta.ijb_file_names("IJBC")
    good = {"tid_mid": TID_MID, "pairs": PAIRS, "5pts": PTS, "gallery1": CSV,
            "gallery2": CSV.replace("1,7", "3,8"), "probe": CSV.replace("1,7", "2,7")}

    @_fuzz_settings(name)
    @given(data=st.data())
    def run(data):
        which = data.draw(st.lists(st.sampled_from(sorted(good)), min_size=1, max_size=2, unique=True))
        for key, text in good.items():
            raw = data.draw(mutated(text)) if key in which else text.encode()
            _write(tmp_path, files[key], raw)

        def both():
            meta = ijb_meta.load_ijb_meta(tmp_path)
            ijb_meta.load_ijb_1n_meta(tmp_path, known_templates=meta.templates)

        _run(name, both)

    COUNTS.pop(name, None)
    run()
    assert COUNTS[name] >= FUZZ_EXAMPLES[name]


def test_fuzz_opencv_matrix_files(tmp_path):
    name = "megaface_io.read_opencv_matrix / read_feature_files"

    @_fuzz_settings(name)
    @given(data=st.data())
    def run(data):
        rows, cols = data.draw(st.integers(-2, 5)), data.draw(st.integers(-2, 3))
        cv_type = data.draw(st.sampled_from([5, 6, 0, 7, -1]))
        stride = data.draw(st.sampled_from([max(cols, 0) * (4 if cv_type == 5 else 8), 4, 0, -4, 2**31 - 1]))
        body = data.draw(st.binary(max_size=64))
        raw = bytearray(struct.pack("<4i", rows, cols, stride, cv_type) + body)
        raw = raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
        first = _write(tmp_path, "a_feat.bin", bytes(raw))
        second = _write(tmp_path, "b_feat.bin", struct.pack("<4i", 3, 1, 4, 5) + b"\0" * 12)
        _run(name, lambda: megaface_io.read_opencv_matrix(first))
        COUNTS[name] -= 1
        _run(name, lambda: megaface_io.read_feature_files([second, first]))

    COUNTS.pop(name, None)
    run()
    assert COUNTS[name] >= FUZZ_EXAMPLES[name]


def test_fuzz_feature_list_json(tmp_path):
    name = "megaface_io.read_feature_list_json"
    base = json.dumps({"path": ["a/1.jpg", "b/2.jpg"], "id": ["a", "b"]}, indent=1)

    @_fuzz_settings(name)
    @given(raw=mutated(base))
    def run(raw):
        path = _write(tmp_path, "facescrub_features_list.json", raw)
        _run(name, lambda: megaface_io.read_feature_list_json(path))

    COUNTS.pop(name, None)
    run()
    assert COUNTS[name] >= FUZZ_EXAMPLES[name]


def test_fuzz_noise_list(tmp_path):
    name = "megaface_io.read_noise_list"

    @_fuzz_settings(name)
    @given(raw=mutated("# noises\nFlickr/a.jpg\nFlickr/b c.jpg\n"))
    def run(raw):
        path = _write(tmp_path, "megaface_noises.txt", raw)
        _run(name, lambda: megaface_io.read_noise_list(path))

    COUNTS.pop(name, None)
    run()
    assert COUNTS[name] >= FUZZ_EXAMPLES[name]


CONFIG = """base: base.yaml
name: fuzz
method: cd
batch_size: 64
optim:
  lr: 0.1
  milestones: [1.0, 2.0]
head:
  name: arcface
  params: {s: 64.0, m: 0.5}
cd:
  percentile: 0.2
data:
  random_resized_crop: [0.8, 1.0]
"""


def test_fuzz_config_yaml(tmp_path):
    name = "config.load_config (YAML text)"
    (tmp_path / "base.yaml").write_text("epochs: 4.0\nmodel:\n  arch: iresnet_tiny\n")

    @_fuzz_settings(name)
    @given(raw=mutated(CONFIG))
    def run(raw):
        path = _write(tmp_path, "run.yaml", raw)
        _run(name, lambda: load_config(path))

    COUNTS.pop(name, None)
    run()
    assert COUNTS[name] >= FUZZ_EXAMPLES[name]


KEYS = ["name", "method", "batch_size", "epochs", "optim.lr", "optim.milestones", "head.name", "head.params",
        "head.params.s", "cd.percentile", "cd.interval", "data", "data.kind", "model.arch", "scores.sync", "x",
        "optim", "a.b.c", "", "."]
VALUES = ["1", "0", "-1", "0.5", "1e3", "nan", ".inf", "true", "null", "~", "[1, 2]", "[", "{s: 1}", "{", "cd",
          "arcface", "'x'", "!!binary aGk=", "&a [*a]", "2022-01-01", "0x10", "!!float 1", "!!set {a}", "|", ">"]


def test_fuzz_config_overrides():
    name = "config.parse_overrides + load_config (overrides)"

    @_fuzz_settings(name)
    @given(items=st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=6),
                                    st.sampled_from(["=", "", "=="]),
                                    st.sampled_from(VALUES) | st.text(max_size=8)), max_size=4))
    def run(items):
        overrides = [k + sep + v for k, sep, v in items]
        _run(name, lambda: load_config(None, overrides))

    COUNTS.pop(name, None)
    run()
    assert COUNTS[name] >= FUZZ_EXAMPLES[name]


def test_known_gaps_are_still_open():
    """A tolerance disappears with its gap: once the case's xfail mark is dropped, drop it here too."""
    gaps = {c.id: c.gap for c in MALFORMED_CASES}
    assert set(FUZZ_KNOWN_GAPS) <= set(FUZZ_EXAMPLES)
    for parser, tolerated in FUZZ_KNOWN_GAPS.items():
        for exc_name, case_id in tolerated.items():
            assert gaps.get(case_id), f"{parser}: {exc_name} is tolerated but case {case_id} has no open gap"
