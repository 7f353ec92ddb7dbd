"""Hostile files are refused without running their code; malformed files get errors naming file and place.

The case tables live in reliability_cases.py (also the source of docs/robustness.md).
"""

from __future__ import annotations

import pickle
import re

import pytest
import yaml
from reliability_cases import HOSTILE_CASES, MALFORMED_CASES, PAYLOAD_KINDS, make_payload

from cdface.errors import CdfaceError


def _exception_type(name: str) -> type[BaseException]:
    import cdface.errors as errors

    if name == "CheckpointError":
        from cdface.train.checkpoint import CheckpointError

        return CheckpointError
    return getattr(errors, name)


def _params(cases):
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.gap)] if c.gap else [])
            for c in cases]


def _check(excinfo: pytest.ExceptionInfo, raises: str, fragments: tuple[str, ...]) -> None:
    expected = _exception_type(raises)
    assert isinstance(excinfo.value, expected), f"{type(excinfo.value).__name__}: {excinfo.value}"
    assert isinstance(excinfo.value, CdfaceError)
    message = str(excinfo.value)
    missing = [f for f in fragments if not re.search(f, message)]
    assert not missing, f"message {message!r} lacks {missing}"


def test_case_tables_are_well_formed():
    for cases in (HOSTILE_CASES, MALFORMED_CASES):
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids)), "case ids must be unique"
        for case in cases:
            assert case.fragments and issubclass(_exception_type(case.raises), CdfaceError)
            for fragment in case.fragments:
                re.compile(fragment)


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_payloads_are_live_when_loaded_unsafely(tmp_path, kind):
    """Control: the payloads really run code when unpickled/YAML-loaded without restriction."""
    marker = tmp_path / "pickle-ran"
    payload = make_payload(kind, marker)
    pickle.loads(payload.raw)  # noqa: S301 - deliberately unsafe, proves the payload works
    assert marker.exists()
    yaml_marker = tmp_path / "yaml-ran"
    unsafe = make_payload(kind, yaml_marker).yaml
    result = yaml.unsafe_load(f"name: {unsafe}\n")
    if hasattr(result["name"], "close"):
        result["name"].close()
    assert yaml_marker.exists()


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@pytest.mark.parametrize("case", _params(HOSTILE_CASES))
def test_hostile_file_is_refused_and_never_runs(tmp_path, case, kind):
    marker = tmp_path / "marker-created"
    work = tmp_path / "work"
    work.mkdir()
    payload = make_payload(kind, marker)
    call = case.build(work, payload)
    try:
        with pytest.raises(Exception) as excinfo:
            call()
    finally:
        assert not marker.exists(), f"{case.id}: the payload ran"
    raises, fragments = (case.raises, case.fragments)
    if payload.obj is None and case.raw_raises:  # refused before unpickling (e.g. mmap needs a zip file)
        raises, fragments = case.raw_raises
    _check(excinfo, raises, fragments)


@pytest.mark.parametrize("case", _params(MALFORMED_CASES))
def test_malformed_input_error_names_file_and_place(tmp_path, case):
    call = case.build(tmp_path)
    with pytest.raises(Exception) as excinfo:
        call()
    _check(excinfo, case.raises, case.fragments)


def test_every_gap_names_a_source_location():
    for case in [*HOSTILE_CASES, *MALFORMED_CASES]:
        if case.gap:
            assert re.search(r"\w+\.py \w+", case.gap), f"{case.id}: name the file and function"
