"""The reliability case tables: hostile files, malformed inputs and fuzz budgets, in one place.

The tests in this folder run these tables; ``scripts/gen_robustness_doc.py`` imports them to write
``docs/robustness.md``. Builders import cdface lazily, so importing this module stays cheap.

A *malformed* case builds one bad input in a temporary folder and returns the call that must fail: the
call must raise ``raises`` (a cdface exception name) with a message matching every regex in ``fragments``
(the file name, the record/line, what was expected). A *hostile* case writes a file carrying a payload
that, if the file were unpickled/YAML-loaded without restriction, would create a marker file; the
reader must refuse it with a cdface error and the marker must never appear.

``gap`` marks a case whose guarantee is not in the code yet: its test is ``xfail(strict=True)`` so it
flips to a failure (a reminder to drop the mark) the moment the code is fixed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Call = Callable[[], object]

# ------------------------------------------------------------------------------------------- fuzz budgets

# Inputs tried per parser by tests/reliability/test_reliability_fuzz.py (hypothesis max_examples,
# derandomised: the same inputs on every run).
FUZZ_EXAMPLES: dict[str, int] = {
    "ijb_meta.read_template_media_list": 120,
    "ijb_meta.read_template_pair_list": 120,
    "ijb_meta.read_name_5pts_score": 120,
    "ijb_meta.read_template_subject_csv": 120,
    "ijb_meta.load_ijb_meta + load_ijb_1n_meta": 80,
    "megaface_io.read_opencv_matrix / read_feature_files": 150,
    "megaface_io.read_feature_list_json": 100,
    "megaface_io.read_noise_list": 60,
    "config.load_config (YAML text)": 120,
    "config.parse_overrides + load_config (overrides)": 150,
}
FUZZ_SECONDS_PER_INPUT = 5.0  # an input that takes longer counts as a hang and fails the test
# parser -> {exception type name: malformed case id documenting the gap}. These exceptions are documented
# gaps (xfail cases below), tolerated by the fuzz tests only while the gap is open.
FUZZ_KNOWN_GAPS: dict[str, dict[str, str]] = {}

# Parsers fuzzed elsewhere (not duplicated here): (parser, test file, test function). The doc reads their
# max_examples from the test files themselves.
FUZZ_ELSEWHERE: list[tuple[str, str, str]] = [
    ("recordio.RecordIOReader (corrupted/truncated .rec)", "tests/data/test_data_recordio.py",
     "test_fuzz_corrupted_rec_raises_only_project_errors"),
    ("pairs_bin.loads_bin (corrupted .bin)", "tests/data/test_data_pairs_bin.py",
     "test_fuzz_corrupted_bin_raises_only_project_errors"),
    ("pairs_bin.loads_bin (random pickle bytes)", "tests/data/test_data_pairs_bin.py", "test_fuzz_random_bytes"),
]

# Evaluation integrity: where bit-identical repeat scoring is checked.
DETERMINISM_TESTS: list[tuple[str, str]] = [
    ("tests/eval/test_eval_pairs.py", "test_cli_pairs_json_contract"),
    ("tests/reliability/test_reliability_determinism.py",
     "test_score_pairs_json_is_bit_identical_across_processes"),
]
KILL_TESTS_FILES = (
    "tests/train/test_train_fit.py",  # in-process crash, SIGKILL, bitwise resume
    "tests/train/test_train_ddp.py",  # a whole DDP job crashes and resumes with prefetching workers
    "tests/train/test_train_rank_death.py",  # one rank is SIGKILLed; the survivor fails clearly; resume=auto
    "tests/train/test_train_run_safety.py",  # a crash, then a resume with a changed config
    "tests/train/test_train_data_faults.py",  # a crash, then a resume that reports corrupt images as before
)

# Training runs never lose or mix data: (situation, rule, test file, test function).
TRAINING_GUARANTEES: list[tuple[str, str, str, str]] = [
    ("global batch not divisible by the process count (3 ranks, batch_size 8)",
     "one config error, printed by rank 0 only; nothing written",
     "tests/train/test_train_cli.py",
     "test_a_batch_that_does_not_split_over_three_processes_is_one_error_printed_once"),
    ("a diverging run (lr 1e6, a checkpoint every step)",
     "no checkpoint with a non-finite weight, moment or score is written; the one named on stop is finite",
     "tests/train/test_train_fit.py", "test_a_diverging_run_never_keeps_non_finite_checkpoints"),
    ("a finite loss whose update makes the weights NaN",
     "a bad step: counted toward max_bad_steps, never checkpointed; resume=auto continues from the finite one",
     "tests/train/test_train_fit.py", "test_nan_losses_and_nan_weights_stop_the_run_naming_a_finite_checkpoint"),
    ("a config value changed between a crash and the resume",
     "applied and logged, or refused naming the key (a table per key); config.yaml holds what is in force",
     "tests/train/test_train_run_safety.py",
     "test_a_config_changed_between_a_crash_and_the_resume_is_applied_or_refused"),
    ("a new run into a run folder that holds another run",
     "refused unless resume or overwrite=true; a failed start changes nothing in the folder",
     "tests/train/test_train_run_safety.py",
     "test_a_new_run_into_a_used_run_folder_is_refused_unless_resumed_or_overwritten"),
    ("Ctrl-C", "one line naming the newest checkpoint and the resume command; exit 130",
     "tests/train/test_train_cli.py", "test_ctrl_c_prints_one_line_naming_the_checkpoint_and_the_resume_command"),
    ("Ctrl-C or SIGTERM while a checkpoint is being written",
     "held until the checkpoint, its sha256 and backbone.pt are whole; then the interrupt names that checkpoint",
     "tests/train/test_train_fit.py",
     "test_ctrl_c_during_the_checkpoint_write_leaves_checkpoint_sidecar_and_backbone_whole"),
    ("a RuntimeError under DDP", "a dead rank is named only when the collective says so; others as themselves",
     "tests/train/test_train_cli.py", "test_only_a_collectives_own_peer_failure_is_reported_as_a_dead_rank"),
    ("corrupt images, then a resume from the epoch-end checkpoint",
     "one limit over the epoch's loaded samples; the resumed run reports what an uninterrupted one reports",
     "tests/train/test_train_data_faults.py", "test_a_resumed_run_reports_corrupt_images_as_an_uninterrupted_one"),
    ("Partial FC (head.sample_rate < 1), crash and resume",
     "the sampling generator is checkpointed: the resumed run is bitwise equal",
     "tests/train/test_train_fit.py", "test_partial_fc_resume_continues_the_sampling_stream"),
    ("log_every=0, checkpoint_every=0, epochs=-1, ...", "refused at load time naming the key and the range",
     "tests/train/test_train_config.py", "test_out_of_range_values_are_refused_at_load_time_naming_the_key"),
]


# ------------------------------------------------------------------------------------------- field layouts


@dataclass(frozen=True)
class Guarantee:
    """A kind of input (or a limit) and the tests that prove cdface handles it: ``file::test`` names."""

    kind: str
    source: str  # who writes such files / what the limit is
    guarantee: str
    tests: tuple[str, ...]


_PAIRS = "tests/data/test_data_pairs_bin.py"
_LAYOUTS = "tests/data/test_data_recordio_layouts.py"
_REC = "tests/data/test_data_recordio.py"
_LISTS = "tests/data/test_data_lists.py"
_CAP = "tests/data/test_data_pixel_cap.py"
_DATASETS = "tests/data/test_data_datasets.py"

# Files written by the field's tools: read as those tools read them (expected values from the tools or
# from the format's definition).
FIELD_LAYOUTS: list[Guarantee] = [
    Guarantee(".bin of numpy arrays", "cv2.imencode arrays (uint8, (nbytes, 1)) pickled at protocols 0-5 "
              "(5 with buffers in band); issame as bools, numpy bool/0-1 int arrays or numpy scalars",
              "loads as insightface's load_bin does; same images and the same accuracy as the bytes-and-bools "
              "file; anything but plain data (object arrays, other globals, a callable ndarray) stays refused",
              (f"{_PAIRS}::test_bin_of_numpy_arrays_loads_like_bytes_and_bools",
               f"{_PAIRS}::test_bin_of_numpy_arrays_scores_like_bytes",
               f"{_PAIRS}::test_bin_with_non_data_stays_refused")),
    Guarantee(".bin of Python 2", "the field's lfw/cfp_fp/agedb_30.bin (protocol 2, BINSTRING); Python 2 "
              "numpy pickles (numpy.core path, dtype(\"u1\", 0, 1))",
              "loads, decodes and rewrites byte for byte",
              (f"{_PAIRS}::test_real_bin_loads_decodes_and_rewrites_byte_exact",
               f"{_PAIRS}::test_python2_numpy_pickle_loads")),
    Guarantee("im2rec RecordIO", "mxnet tools/im2rec.py with or without --pack-label (flag = label count, "
              "label [class, ...]); shuffled and sparse keys; any class at key 0",
              "every record is an image with its first label as class; no header is guessed",
              (f"{_LAYOUTS}::test_im2rec_files_read_every_record_as_an_image",
               f"{_REC}::test_real_im2rec_file_has_no_header")),
    Guarantee("insightface RecordIO", "header record 0 (two labels, no image), images 1..N with scalar or "
              "array labels, identity records",
              "record 0 counts as a header only when it is one and agrees with the records and the .idx; "
              "otherwise an error naming the record, never training on part of the set",
              (f"{_LAYOUTS}::test_insightface_layout_from_its_header",
               f"{_LAYOUTS}::test_header_that_disagrees_with_the_records_is_an_error",
               f"{_LAYOUTS}::test_identity_record_among_images_is_refused_not_trained_on",
               f"{_LAYOUTS}::test_missing_identity_records_only_warn",
               f"{_REC}::test_real_insightface_file_reads_and_rewrites_byte_exact")),
    Guarantee("RecordIO above 2**24 images", "float32 header labels (WebFace42M: 42,474,557 images, "
              "header end 42,474,560)",
              "the image/identity boundary is found from the records by a binary search over the keys the "
              "float stands for; the writer refuses class ids it cannot store exactly",
              (f"{_LAYOUTS}::test_image_boundary_above_2_24_is_found_from_the_records",
               f"{_LAYOUTS}::test_float32_tolerance_matches_float32_rounding",
               f"{_LAYOUTS}::test_huge_header_off_by_more_than_float32_can_be_is_an_error",
               f"{_LAYOUTS}::test_writer_keeps_class_ids_exact_in_float32")),
    Guarantee("image lists", "mxnet im2rec `<index>\\t<label(s)>\\t<path>`, insightface "
              "`1\\t<path>\\t<label>`, cdface `<path> <label>`",
              "the same paths and labels from each form; anything else a load-time error naming file, line "
              "and the accepted forms",
              (f"{_LISTS}::test_every_list_form_gives_the_same_paths_and_labels",
               f"{_LISTS}::test_insightface_list_trains_on_the_right_files",
               f"{_LISTS}::test_unreadable_list_names_file_line_and_the_forms")),
]

# Resource limits and side effects.
RESOURCE_LIMITS: list[Guarantee] = [
    Guarantee("pixel cap", "decode.DEFAULT_MAX_IMAGE_PIXELS (64,000,000); data.max_image_pixels, "
              "$CDFACE_MAX_IMAGE_PIXELS, `data inspect --max-image-pixels`",
              "every decoder (simplejpeg JPEG, Pillow PNG/others) and reader (.bin, RecordIO, folders, lists, "
              "embed, training, evaluation, data inspect --check) refuses a larger image from its header, naming "
              "file, record/pair index and size; evaluation stops with that error, training substitutes and "
              "counts it; with 12000x12000 images peak RSS (getrusage, subprocess) stays under 100 MB above "
              "the baseline",
              (f"{_CAP}::test_every_reader_refuses_before_decoding_with_bounded_memory",
               f"{_CAP}::test_cap_setting_config_env_and_argument",
               f"{_CAP}::test_config_key_reaches_the_training_dataset",
               f"{_CAP}::test_inspect_cli_lists_oversized_images",
               f"{_CAP}::test_pair_set_evaluation_stops_on_a_refused_image_with_or_without_workers")),
    Guarantee("nothing written beside the data", "the RecordIO label cache: data.cache_dir, else "
              "$XDG_CACHE_HOME/cdface or ~/.cache/cdface; data.label_cache: false for none",
              "keyed by absolute path, size and mtime; a read-only dataset folder trains and is left untouched",
              (f"{_DATASETS}::test_label_cache_goes_to_the_cache_dir_never_beside_the_data",
               f"{_DATASETS}::test_training_on_a_read_only_dataset_writes_nothing_beside_it",
               f"{_DATASETS}::test_recordio_label_cache_is_invalidated")),
]


# ------------------------------------------------------------------------------------------- hostile files


@dataclass(frozen=True)
class Payload:
    """A pickle that, when unpickled without restriction, creates ``marker``.

    ``obj`` is a picklable object embedded in a container (None: only the standalone pickle exists);
    ``raw`` is a standalone pickle; ``yaml`` the same intent as a PyYAML python tag.
    """

    kind: str
    obj: Any
    raw: bytes
    yaml: str


class _Reduce:
    def __init__(self, func: Callable[..., Any], args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def make_payload(kind: str, marker: Path) -> Payload:
    m = str(marker)
    if kind == "os.system":
        obj = _Reduce(os.system, (f"touch '{m}'",))
        return Payload(kind, obj, pickle.dumps(obj, protocol=2), f"!!python/object/apply:os.system [\"touch '{m}'\"]")
    if kind == "subprocess.call":
        obj = _Reduce(subprocess.call, (["touch", m],))
        return Payload(kind, obj, pickle.dumps(obj, protocol=4),
                       f"!!python/object/apply:subprocess.call [[touch, '{m}']]")
    if kind == "builtins.getattr(__import__)":
        # getattr(__import__('os'), 'system')('touch marker'), hand-written at protocol 0
        raw = (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch "
               + m.encode() + b"'\ntR.")
        return Payload(kind, None, raw, f"!!python/object/apply:builtins.open ['{m}', w]")
    raise ValueError(kind)


PAYLOAD_KINDS = ("os.system", "subprocess.call", "builtins.getattr(__import__)")


def _torch_file(path: Path, payload: Payload, wrap: Callable[[Any], Any]) -> None:
    """torch.save(wrap(payload)) (zip format) or, for a standalone payload, the raw (legacy) pickle."""
    if payload.obj is None:
        path.write_bytes(payload.raw)
        return
    import torch

    torch.save(wrap(payload.obj), path)


def _sidecar(path: Path) -> None:
    """A matching sha256 sidecar: an attacker who writes the checkpoint can write its checksum too."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def _h_bin(tmp: Path, payload: Payload) -> Call:
    from cdface.data.pairs_bin import load_bin

    path = tmp / "evil_lfw.bin"
    if payload.obj is None:
        path.write_bytes(payload.raw)
    else:
        path.write_bytes(pickle.dumps(([b"a", payload.obj], [True]), protocol=2))
    return lambda: load_bin(path)


def _h_checkpoint(tmp: Path, payload: Payload) -> Call:
    import torch

    from cdface.train.checkpoint import load_checkpoint

    path = tmp / "ckpt_00000002.pt"
    _torch_file(path, payload, lambda o: {"backbone": {"w": torch.zeros(1)}, "step": 2, "trap": o})
    _sidecar(path)
    return lambda: load_checkpoint(path)


def _h_backbone(tmp: Path, payload: Payload) -> Call:
    import torch

    from cdface.inference.loading import load_embedding_model

    path = tmp / "evil_backbone.pth"
    _torch_file(path, payload, lambda o: {"conv1.weight": torch.zeros(1), "trap": o})
    return lambda: load_embedding_model(path, device="cpu")


def _h_scores(tmp: Path, payload: Payload) -> Call:
    import torch

    from cdface.train.checkpoint import latest_valid_checkpoint, load_checkpoint

    ckpt_dir = tmp / "stage1" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    path = ckpt_dir / "ckpt_00000007.pt"
    _torch_file(path, payload, lambda o: {"backbone": {"w": torch.zeros(1)}, "scores": {"scores": o}})
    _sidecar(path)
    # what fit() does for init_from=<run dir> / resume: auto
    return lambda: load_checkpoint(latest_valid_checkpoint(ckpt_dir))


def _h_sharded_head(tmp: Path, payload: Payload) -> Call:
    from cdface.parallel.checkpoint import FORMAT, read_full_state

    path = tmp / "head_full.pt"
    _torch_file(path, payload, lambda o: {"format": FORMAT, "state_dict": {"core.weight": o}})
    return lambda: read_full_state(path)


def _h_insightface_shards(tmp: Path, payload: Payload) -> Call:
    from cdface.parallel.checkpoint import import_insightface

    folder = tmp / "partial_fc"
    folder.mkdir()
    _torch_file(folder / "softmax_fc_gpu_0.pt", payload, lambda o: {"weight": o})
    return lambda: import_insightface(folder)


def _h_config(tmp: Path, payload: Payload) -> Call:
    from cdface.config import load_config

    path = tmp / "evil_config.yaml"
    path.write_text(f"name: {payload.yaml}\n")
    return lambda: load_config(path)


def _h_override(tmp: Path, payload: Payload) -> Call:
    from cdface.config import load_config

    return lambda: load_config(None, [f"name={payload.yaml}"])


def _h_npy(tmp: Path, payload: Payload) -> Call:
    import numpy as np

    from cdface.cli import build_parser

    path = tmp / "evil_embeddings.npy"
    if payload.obj is None:
        path.write_bytes(payload.raw)
    else:
        np.save(path, np.array([payload.obj, 1], dtype=object), allow_pickle=True)
    np.save(tmp / "issame.npy", np.array([True]))
    args = build_parser().parse_args(
        ["score", "pairs", "--embeddings", str(path), "--issame", str(tmp / "issame.npy")]
    )
    return lambda: args.func(args)


def _h_quickstart(tmp: Path, payload: Payload) -> Call:
    import json

    import torch

    from cdface.train.ablation import load_backbone

    run = tmp / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"arch": "iresnet_tiny", "embedding_size": 8}))
    _torch_file(run / "backbone.pt", payload, lambda o: {"conv1.weight": torch.zeros(1), "trap": o})
    return lambda: load_backbone(run, torch.device("cpu"))


@dataclass(frozen=True)
class HostileCase:
    id: str
    description: str
    reader: str
    build: Callable[[Path, Payload], Call]
    raises: str
    fragments: tuple[str, ...]
    gap: str | None = None
    # for the standalone (non-zip) pickle payload, when the reader refuses the file before unpickling
    raw_raises: tuple[str, tuple[str, ...]] | None = None


HOSTILE_CASES: list[HostileCase] = [
    HostileCase("bin", ".bin pair file whose pickle calls the payload", "cdface.data.pairs_bin.load_bin",
                _h_bin, "UnsafeFileError", (r"evil_lfw\.bin", r"refusing to unpickle global")),
    HostileCase("checkpoint", "training checkpoint (with a matching .sha256) holding the payload",
                "cdface.train.checkpoint.load_checkpoint", _h_checkpoint, "UnsafeFileError",
                (r"ckpt_00000002\.pt", r"refused")),
    HostileCase("backbone-pth", "insightface-style backbone .pth holding the payload",
                "cdface.inference.loading.load_embedding_model", _h_backbone, "UnsafeFileError",
                (r"evil_backbone\.pth", r"refused")),
    HostileCase("score-file", "stage-1 checkpoint whose difficulty-score state is the payload (init_from/resume)",
                "cdface.train.checkpoint.latest_valid_checkpoint + load_checkpoint", _h_scores,
                "UnsafeFileError", (r"ckpt_00000007\.pt", r"refused")),
    HostileCase("sharded-head", "saved sharded-head state whose weight is the payload",
                "cdface.parallel.checkpoint.read_full_state", _h_sharded_head, "UnsafeFileError",
                (r"head_full\.pt", r"refused"),
                raw_raises=("FormatError", (r"head_full\.pt", r"a file written by torch\.save", r"mmap"))),
    HostileCase("insightface-head-shards", "insightface Partial FC shard softmax_fc_gpu_0.pt holding the payload",
                "cdface.parallel.checkpoint.import_insightface", _h_insightface_shards, "UnsafeFileError",
                (r"softmax_fc_gpu_0\.pt", r"refused")),
    HostileCase("config-yaml", "YAML config with a !!python/object/apply tag", "cdface.config.load_config",
                _h_config, "ConfigError", (r"evil_config\.yaml", r"not valid YAML")),
    HostileCase("config-override", "key=value override with a !!python/object/apply tag",
                "cdface.config.load_config(overrides=...)", _h_override, "ConfigError",
                (r"override .name=", r"cannot parse value")),
    HostileCase("npy-features", "`cdface score pairs` embeddings .npy holding a pickled object array",
                "cdface score pairs (eval.cli_common.load_array)", _h_npy, "FormatError",
                (r"evil_embeddings\.npy", r"without pickled objects")),
    HostileCase("quickstart-backbone", "run folder backbone.pt read by the quickstart report",
                "cdface.train.ablation.load_backbone", _h_quickstart, "UnsafeFileError",
                (r"backbone\.pt", r"refused")),
]


# ------------------------------------------------------------------------------------------- malformed inputs


@dataclass(frozen=True)
class MalformedCase:
    id: str
    description: str
    reader: str
    build: Callable[[Path], Call]
    raises: str
    fragments: tuple[str, ...]
    gap: str | None = None


def _jpeg(seed: int = 0) -> bytes:
    import numpy as np

    from cdface.data.decode import encode_jpeg

    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))


def _small_rec(tmp: Path, n: int = 3) -> Path:
    """t.rec/t.idx, im2rec layout: keys 0..n-1, each an IRHeader + 50 payload bytes."""
    from cdface.data.recordio_format import IRHeader, pack_header
    from cdface.data.recordio_writer import RecordIOWriter

    with RecordIOWriter(tmp / "t.rec", tmp / "t.idx") as writer:
        for key in range(n):
            writer.write(key, pack_header(IRHeader(0, float(key), key, 0), b"payload-%d" % key * 5))
    return tmp / "t.rec"


def _offset(tmp: Path, key: int) -> int:
    from cdface.data.recordio_format import read_idx

    keys, offsets = read_idx(tmp / "t.idx")
    return int(offsets[list(keys).index(key)])


def _m_rec_truncated(tmp: Path) -> Call:
    from cdface.data.recordio import RecordIOReader

    rec = _small_rec(tmp)
    rec.write_bytes(rec.read_bytes()[:-20])
    return lambda: RecordIOReader(rec).read(2)


def _m_rec_truncated_no_idx(tmp: Path) -> Call:
    from cdface.data.recordio import RecordIOReader

    rec = _small_rec(tmp)
    rec.write_bytes(rec.read_bytes()[:-20])
    (tmp / "t.idx").unlink()
    return lambda: RecordIOReader(rec)


def _m_idx_past_end(tmp: Path) -> Call:
    from cdface.data.recordio import RecordIOReader

    rec = _small_rec(tmp)
    (tmp / "t.idx").write_text("0\t0\n1\t999999\n")
    return lambda: RecordIOReader(rec)


def _m_idx_bad_line(tmp: Path) -> Call:
    from cdface.data.recordio import RecordIOReader

    rec = _small_rec(tmp)
    (tmp / "t.idx").write_text("0\t0\n1 banana\n")
    return lambda: RecordIOReader(rec)


def _m_rec_bad_magic(tmp: Path) -> Call:
    from cdface.data.recordio import RecordIOReader

    rec = _small_rec(tmp)
    data = bytearray(rec.read_bytes())
    data[_offset(tmp, 1)] ^= 0xFF
    rec.write_bytes(bytes(data))
    return lambda: RecordIOReader(rec).read(1)


def _m_rec_bad_magic_headers(tmp: Path) -> Call:
    import numpy as np

    from cdface.data.recordio import RecordIOReader

    rec = _small_rec(tmp)
    data = bytearray(rec.read_bytes())
    data[_offset(tmp, 1) + 2] ^= 0x5A
    rec.write_bytes(bytes(data))
    return lambda: RecordIOReader(rec).read_headers(np.arange(3))


def _m_rec_bad_cflag(tmp: Path) -> Call:
    from cdface.data.recordio import RecordIOReader

    rec = _small_rec(tmp)
    data = bytearray(rec.read_bytes())
    at = _offset(tmp, 1) + 4
    (lrec,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<I", data, at, (2 << 29) | (lrec & ((1 << 29) - 1)))
    rec.write_bytes(bytes(data))
    return lambda: RecordIOReader(rec).read(1)


def _m_rec_short_header(tmp: Path) -> Call:
    from cdface.data.recordio import RecordIOReader
    from cdface.data.recordio_writer import RecordIOWriter

    with RecordIOWriter(tmp / "t.rec", tmp / "t.idx") as writer:
        writer.write(0, b"short")
    return lambda: RecordIOReader(tmp / "t.rec").read(0)


def _m_rec_label_nan(tmp: Path) -> Call:
    from cdface.data.datasets import RecordIODataset
    from cdface.data.recordio_format import IRHeader, pack_header
    from cdface.data.recordio_writer import RecordIOWriter

    with RecordIOWriter(tmp / "t.rec", tmp / "t.idx") as writer:
        writer.write(0, pack_header(IRHeader(0, 1.0, 0, 0), _jpeg(0)))
        writer.write(1, pack_header(IRHeader(0, float("nan"), 1, 0), _jpeg(1)))
    return lambda: RecordIODataset(tmp / "t.rec", cache_labels=False)


def _m_rec_not_image(tmp: Path) -> Call:
    from cdface.data.datasets import RecordIODataset
    from cdface.data.recordio_writer import write_insightface_rec

    images = [_jpeg(0), b"this is not an image", _jpeg(2)]
    paths = write_insightface_rec(tmp, [0, 0, 1], images, prefix="faces")
    dataset = RecordIODataset(paths["rec"], cache_labels=False)
    return lambda: dataset.load_image(1)


def _m_file_not_image(tmp: Path) -> Call:
    from cdface.data.datasets import ImageListDataset

    (tmp / "good.jpg").write_bytes(_jpeg(0))
    (tmp / "face_0002.jpg").write_bytes(b"GIF89a but not really")
    (tmp / "train.lst").write_text("good.jpg 0\nface_0002.jpg 1\n")
    dataset = ImageListDataset(tmp / "train.lst")
    return lambda: dataset.load_image(1)


def _m_bin_not_image(tmp: Path) -> Call:
    from cdface.data.pairs_bin import decode_pairs, load_bin, write_bin

    path = write_bin(tmp / "agedb_30.bin", [_jpeg(0), b"\x89PNG broken", _jpeg(2), _jpeg(3)], [True, False])
    return lambda: decode_pairs(load_bin(path), num_threads=1)


def _m_list_few_fields(tmp: Path) -> Call:
    from cdface.data.datasets import ImageListDataset

    (tmp / "train.lst").write_text("# path label\na/1.jpg 0\na/2.jpg\n")
    return lambda: ImageListDataset(tmp / "train.lst")


def _m_list_bad_label(tmp: Path) -> Call:
    from cdface.data.datasets import ImageListDataset

    (tmp / "train.lst").write_text("a/1.jpg 0\n\na/2.jpg -3\n")
    return lambda: ImageListDataset(tmp / "train.lst")


def _m_list_unaligned(tmp: Path) -> Call:
    from cdface.data.datasets import ImageListDataset

    (tmp / "train.lst").write_text("1\ta.jpg\t3\n0\tb.jpg\t4\t1\t2\t30\t40\n")  # insightface, aligned flag first
    return lambda: ImageListDataset(tmp / "train.lst")


def _m_list_unknown_form(tmp: Path) -> Call:
    from cdface.data.datasets import ImageListDataset

    (tmp / "train.lst").write_text("1\t5\t7\n")  # no field is a path: neither mxnet's nor insightface's form
    return lambda: ImageListDataset(tmp / "train.lst")


def _rec_of(tmp: Path, records: list[tuple[int, bytes]]) -> Path:
    from cdface.data.recordio_writer import RecordIOWriter

    with RecordIOWriter(tmp / "t.rec", tmp / "t.idx") as writer:
        for key, payload in records:
            writer.write(key, payload)
    return tmp / "t.rec"


def _m_rec_header_disagrees(tmp: Path) -> Call:
    from cdface.data.datasets import RecordIODataset
    from cdface.data.recordio_format import IRHeader, pack_header

    header = pack_header(IRHeader(0, [3.0, 7.0], 0, 0))  # says images are keys 1..2; records 1..4 are images
    images = [(k, pack_header(IRHeader(0, float(k // 3), k, 0), _jpeg(k))) for k in range(1, 5)]
    ids = [(5, pack_header(IRHeader(0, [1.0, 3.0], 0, 0))), (6, pack_header(IRHeader(0, [3.0, 5.0], 0, 0)))]
    rec = _rec_of(tmp, [(0, header), *images, *ids])
    return lambda: RecordIODataset(rec, cache_labels=False)


def _m_rec_identity_among_images(tmp: Path) -> Call:
    from cdface.data.datasets import RecordIODataset
    from cdface.data.recordio_format import IRHeader, pack_header

    records = [(k, pack_header(IRHeader(0, 1.0, k, 0), _jpeg(k))) for k in range(4)]
    records[2] = (2, pack_header(IRHeader(0, [1.0, 3.0], 0, 0)))  # labels only, no image
    rec = _rec_of(tmp, records)
    return lambda: RecordIODataset(rec, cache_labels=False)


def _m_data_path_missing(tmp: Path) -> Call:
    from cdface.data.datasets import build_train_dataset

    return lambda: build_train_dataset("recordio", tmp / "ms1m" / "train.rec")


def _m_bin_over_cap(tmp: Path) -> Call:
    from cdface.data.pairs_bin import decode_pairs, load_bin, write_bin

    path = write_bin(tmp / "lfw.bin", [_jpeg(i) for i in range(4)], [True, False])
    return lambda: decode_pairs(load_bin(path), num_threads=1, max_pixels=10_000)


def _m_rec_over_cap(tmp: Path) -> Call:
    from cdface.data.datasets import RecordIODataset
    from cdface.data.recordio_writer import write_insightface_rec

    paths = write_insightface_rec(tmp, [0, 1], [_jpeg(0), _jpeg(1)], prefix="faces")
    dataset = RecordIODataset(paths["rec"], cache_labels=False, max_pixels=10_000)
    return lambda: dataset.load_image(1)


def _m_bin_object_array(tmp: Path) -> Call:
    import numpy as np

    from cdface.data.pairs_bin import load_bin

    path = tmp / "val.bin"
    path.write_bytes(pickle.dumps(([_jpeg(0), _jpeg(1)], np.array([True, None], dtype=object)), protocol=5))
    return lambda: load_bin(path)


def _m_lfw_pairs(tmp: Path) -> Call:
    from cdface.data.lfw_pairs import read_lfw_pairs

    (tmp / "pairs.txt").write_text("10 300\nAaron 1 2\nAaron 1 Bob\n")
    return lambda: read_lfw_pairs(tmp / "pairs.txt")


def _ijb_dir(tmp: Path, pairs: str = "1 2 1\n1 3 0\n", pts_row2: str | None = None) -> Path:
    meta = tmp / "meta"
    meta.mkdir()
    (meta / "ijbc_face_tid_mid.txt").write_text("1.jpg 1 10\n2.jpg 2 20\n3.jpg 3 30\n")
    row = "1 2 3 4 5 6 7 8 9 10 0.9"
    rows = [f"1.jpg {row}", pts_row2 or f"2.jpg {row}", f"3.jpg {row}"]
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(rows) + "\n")
    (meta / "ijbc_template_pair_label.txt").write_text(pairs)
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
    (meta / "ijbc_1N_gallery_G1.csv").write_text(header + "1,100,1.jpg\n")
    (meta / "ijbc_1N_gallery_G2.csv").write_text(header + "2,200,2.jpg\n")
    (meta / "ijbc_1N_probe_mixed.csv").write_text(header + "3,100,3.jpg\n")
    return meta


def _m_ijb_unknown_pair_template(tmp: Path) -> Call:
    from cdface.eval.ijb_meta import load_ijb_meta

    meta = _ijb_dir(tmp, pairs="1 2 1\n1 77 0\n")
    return lambda: load_ijb_meta(meta)


def _m_ijb_unknown_1n_template(tmp: Path) -> Call:
    from cdface.eval.ijb_meta import load_ijb_1n_meta

    meta = _ijb_dir(tmp)
    (meta / "ijbc_1N_probe_mixed.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n3,100,3.jpg\n99,100,9.jpg\n")
    return lambda: load_ijb_1n_meta(meta, known_templates=[1, 2, 3])


def _m_ijb_5pts_nan(tmp: Path) -> Call:
    from cdface.eval.ijb_meta import load_ijb_meta

    meta = _ijb_dir(tmp, pts_row2="2.jpg 1 2 nan 4 5 6 7 8 9 10 0.9")
    return lambda: load_ijb_meta(meta)


def _m_ijb_tid_mid_fields(tmp: Path) -> Call:
    from cdface.eval.ijb_meta import read_template_media_list

    path = tmp / "ijbb_face_tid_mid.txt"
    path.write_text("1.jpg 1 10\n2.jpg 2\n")
    return lambda: read_template_media_list(path)


def _m_ijb_big_template_id(tmp: Path) -> Call:
    from cdface.eval.ijb_meta import read_template_media_list

    path = tmp / "ijbb_face_tid_mid.txt"
    path.write_text("1.jpg 1 10\n2.jpg 99999999999999999999 20\n")
    return lambda: read_template_media_list(path)


def _m_ijb_big_pair_template(tmp: Path) -> Call:
    from cdface.eval.ijb_meta import read_template_pair_list

    path = tmp / "ijbb_template_pair_label.txt"
    path.write_text("1 2 1\n1 99999999999999999999 0\n")
    return lambda: read_template_pair_list(path)


def _m_ijb_big_csv_template(tmp: Path) -> Call:
    from cdface.eval.ijb_meta import read_template_subject_csv

    path = tmp / "ijbc_1N_gallery_G1.csv"
    path.write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,7,img/1.jpg\n99999999999999999999,7,img/2.jpg\n")
    return lambda: read_template_subject_csv(path)


def _m_config_base_error(tmp: Path) -> Call:
    (tmp / "stage1.yaml").write_text("optim:\n  lr: fast\n")
    return _config(tmp, "base: stage1.yaml\nname: stage2\n")


def _m_config_not_utf8(tmp: Path) -> Call:
    from cdface.config import load_config

    path = tmp / "stage2.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    return lambda: load_config(path)


def _m_config_base_nul(tmp: Path) -> Call:
    return _config(tmp, 'base: "base\\0.yaml"\n')


def _m_config_deep(tmp: Path) -> Call:
    return _config(tmp, "head:\n  params: " + "[" * 3000 + "]" * 3000 + "\n")


def _m_align_nan(tmp: Path) -> Call:
    import numpy as np

    from cdface.data.align import align_face

    points = np.array([[38.0, 51.0], [73.0, 51.0], [56.0, 71.0], [np.nan, 92.0], [70.0, 92.0]])
    return lambda: align_face(np.zeros((112, 112, 3), np.uint8), points)


def _m_bin_counts(tmp: Path) -> Call:
    from cdface.data.pairs_bin import load_bin

    path = tmp / "cfp_fp.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True, False]), protocol=2))
    return lambda: load_bin(path)


def _m_bin_not_pickle(tmp: Path) -> Call:
    from cdface.data.pairs_bin import load_bin

    path = tmp / "lfw.bin"
    path.write_bytes(b"\x80\x02]q\x00(T\x05\x00\x00\x00ab")
    return lambda: load_bin(path)


def _config(tmp: Path, text: str) -> Call:
    from cdface.config import load_config

    path = tmp / "stage2.yaml"
    path.write_text(text)
    return lambda: load_config(path)


def _m_override_unknown(tmp: Path) -> Call:
    from cdface.config import load_config

    return lambda: load_config(None, ["cd.nume=3"])


def _m_opencv_size(tmp: Path) -> Call:
    from cdface.eval.megaface_io import read_opencv_matrix

    path = tmp / "probe_feat.bin"
    path.write_bytes(struct.pack("<4i", 4, 1, 4, 5) + struct.pack("<2f", 1.0, 2.0))
    return lambda: read_opencv_matrix(path)


def _m_opencv_type(tmp: Path) -> Call:
    from cdface.eval.megaface_io import read_opencv_matrix

    path = tmp / "probe_feat.bin"
    path.write_bytes(struct.pack("<4i", 2, 1, 4, 0) + b"\0" * 8)
    return lambda: read_opencv_matrix(path)


def _m_feature_dims(tmp: Path) -> Call:
    import numpy as np

    from cdface.eval.megaface_io import read_feature_files, write_opencv_matrix

    write_opencv_matrix(tmp / "a.jpg_feat.bin", np.ones(4, np.float32))
    write_opencv_matrix(tmp / "b.jpg_feat.bin", np.ones(3, np.float32))
    return lambda: read_feature_files([tmp / "a.jpg_feat.bin", tmp / "b.jpg_feat.bin"])


def _m_feature_json(tmp: Path) -> Call:
    from cdface.eval.megaface_io import read_feature_list_json

    path = tmp / "facescrub_features_list.json"
    path.write_text('{"path": ["a.jpg",\n  "b.jpg" "c.jpg"]}')
    return lambda: read_feature_list_json(path)


def _m_noise_list_encoding(tmp: Path) -> Call:
    from cdface.eval.megaface_io import read_noise_list

    path = tmp / "megaface_noises.txt"
    path.write_bytes(b"# noise\nFlickr/a.jpg\nFlickr/\xff\xfe.jpg\n")
    return lambda: read_noise_list(path)


def _m_feature_list_directory(tmp: Path) -> Call:
    from cdface.eval.megaface_io import read_feature_list_json

    path = tmp / "megaface_features_list.json_1000000_1"
    path.mkdir()
    return lambda: read_feature_list_json(path)


def _save_backbone(tmp: Path, arch: str, name: str) -> Path:
    import torch

    from cdface.models import create_model

    path = tmp / name
    torch.save(create_model(arch, embedding_size=8).state_dict(), path)
    return path


def _m_other_arch(tmp: Path) -> Call:
    from cdface.inference.loading import load_embedding_model

    path = _save_backbone(tmp, "iresnet_tiny", "r_tiny_backbone.pth")
    return lambda: load_embedding_model(path, arch="mobilefacenet", embedding_size=8, device="cpu")


def _m_other_arch_model_json(tmp: Path) -> Call:
    import json

    from cdface.inference.loading import load_embedding_model

    _save_backbone(tmp, "iresnet_tiny", "backbone.pt")
    (tmp / "model.json").write_text(json.dumps({"arch": "mobilefacenet", "embedding_size": 8}))
    return lambda: load_embedding_model(tmp, device="cpu")


def _m_checkpoint_truncated(tmp: Path) -> Call:
    import torch

    from cdface.train.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint({"backbone": {"w": torch.zeros(64)}, "step": 3}, tmp, 3)
    path.write_bytes(path.read_bytes()[:-9])
    return lambda: load_checkpoint(path)


def _m_checkpoint_junk(tmp: Path) -> Call:
    from cdface.train.checkpoint import load_checkpoint

    path = tmp / "ckpt_00000004.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    return lambda: load_checkpoint(path)


def _tiny_rec_set(tmp: Path) -> Path:
    from cdface.data.recordio_writer import write_insightface_rec

    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    return write_insightface_rec(tmp / "data", labels, [_jpeg(i) for i in range(len(labels))])["rec"]


def _fit_from(tmp: Path, state: dict) -> Call:
    import torch

    from cdface.config import config_from_dict
    from cdface.train.trainer import fit

    rec = _tiny_rec_set(tmp)
    init = tmp / "stage1_ckpt.pt"
    torch.save(state, init)
    cfg = config_from_dict({
        "name": "stage2", "output_dir": str(tmp / "runs"), "batch_size": 4, "epochs": 1.0, "device": "cpu",
        "tensorboard": False, "init_from": str(init),
        "data": {"kind": "recordio", "path": str(rec), "num_workers": 0},
        "model": {"arch": "iresnet_tiny", "embedding_size": 8},
    })
    return lambda: fit(cfg)


def _m_init_from_other_arch(tmp: Path) -> Call:
    import torch

    from cdface.heads import create_head
    from cdface.models import create_model

    state = {"backbone": create_model("mobilefacenet", embedding_size=8).state_dict(),
             "head": create_head("arcface", 8, 2).state_dict(), "scores": {"scores": torch.zeros(8)}}
    return _fit_from(tmp, state)


def _m_init_from_no_scores(tmp: Path) -> Call:
    from cdface.heads import create_head
    from cdface.models import create_model

    state = {"backbone": create_model("iresnet_tiny", embedding_size=8).state_dict(),
             "head": create_head("arcface", 8, 2).state_dict()}
    return _fit_from(tmp, state)


MALFORMED_CASES: list[MalformedCase] = [
    # --- RecordIO
    MalformedCase("rec-truncated", ".rec cut 20 bytes short (last record)", "RecordIOReader.read",
                  _m_rec_truncated, "FormatError", (r"t\.rec", r"record 2", r"truncated")),
    MalformedCase("rec-truncated-no-idx", "truncated .rec without an .idx (offsets scanned)", "RecordIOReader",
                  _m_rec_truncated_no_idx, "FormatError", (r"t\.rec", r"record 2", r"truncated")),
    MalformedCase("idx-offset-past-end", ".idx offset beyond the end of the .rec", "RecordIOReader",
                  _m_idx_past_end, "FormatError", (r"t\.idx", r"line 2 \(key 1\)", r"an offset inside .*t\.rec")),
    MalformedCase("idx-bad-line", ".idx line that is not `key<TAB>offset`", "RecordIOReader",
                  _m_idx_bad_line, "FormatError", (r"t\.idx", r"line 2", r"<int key>")),
    MalformedCase("rec-bad-magic", "record whose magic number is corrupted", "RecordIOReader.read",
                  _m_rec_bad_magic, "FormatError", (r"t\.rec", r"record 1", r"magic 0xced7230a")),
    MalformedCase("rec-bad-magic-headers", "bad magic met by the vectorised label scan", "RecordIOReader.read_headers",
                  _m_rec_bad_magic_headers, "FormatError", (r"t\.rec", r"record 1", r"magic 0xced7230a")),
    MalformedCase("rec-bad-part-flag", "whole record marked as a middle part (cflag 2)", "RecordIOReader.read",
                  _m_rec_bad_cflag, "FormatError", (r"t\.rec", r"record 1", r"multi-part flag")),
    MalformedCase("rec-short-irheader", "record payload shorter than an IRHeader", "RecordIOReader.read",
                  _m_rec_short_header, "FormatError", (r"t\.rec", r"record 0", r"at least 24 bytes")),
    MalformedCase("rec-label-nan", "image record whose label is NaN", "RecordIODataset",
                  _m_rec_label_nan, "FormatError", (r"t\.rec", r"record 1", r"non-negative integer label")),
    # --- images
    MalformedCase("rec-not-an-image", "RecordIO image record holding text", "RecordIODataset.load_image",
                  _m_rec_not_image, "FormatError", (r"faces\.rec", r"record 2", r"decodable image")),
    MalformedCase("file-not-an-image", "listed image file that is not an image", "ImageListDataset.load_image",
                  _m_file_not_image, "FormatError", (r"face_0002\.jpg", r"decodable image")),
    MalformedCase("bin-not-an-image", ".bin pair file with an undecodable image", "pairs_bin.decode_pairs",
                  _m_bin_not_image, "FormatError", (r"agedb_30\.bin", r"image 1", r"decodable image")),
    # --- image lists / pair lists
    MalformedCase("list-too-few-fields", "image-list line without a label", "ImageListDataset",
                  _m_list_few_fields, "FormatError", (r"train\.lst", r"line 3", r"<path> <label >= 0>")),
    MalformedCase("list-negative-label", "image-list line with a negative label", "ImageListDataset",
                  _m_list_bad_label, "FormatError", (r"train\.lst", r"line 3", r"<path> <label >= 0>")),
    MalformedCase("lfw-pairs-bad-line", "LFW pairs.txt line of neither pair form", "lfw_pairs.read_lfw_pairs",
                  _m_lfw_pairs, "FormatError", (r"pairs\.txt", r"line 3", r"name1 i name2 j")),
    MalformedCase("list-insightface-unaligned", "insightface .lst entry with aligned flag 0 (box, landmarks)",
                  "ImageListDataset", _m_list_unaligned, "FormatError", (r"train\.lst", r"line 2", r"align")),
    MalformedCase("list-unknown-form", ".lst line of none of the three forms", "ImageListDataset",
                  _m_list_unknown_form, "FormatError",
                  (r"train\.lst", r"line 1", r"<path> <label >= 0>", r"mxnet im2rec", r"insightface '1\\t<path>")),
    # --- RecordIO layout and training-set paths
    MalformedCase("rec-header-disagrees", "insightface header record 0 whose image end disagrees with the records",
                  "RecordIODataset", _m_rec_header_disagrees, "FormatError",
                  (r"t\.rec", r"record 0", r"image records at keys 1\.\.2", r"disagree")),
    MalformedCase("rec-identity-among-images", "label-only (identity) record among the image records",
                  "RecordIODataset", _m_rec_identity_among_images, "FormatError",
                  (r"t\.rec", r"record 2", r"without image")),
    MalformedCase("data-path-missing", "training data.path that does not exist", "datasets.build_train_dataset",
                  _m_data_path_missing, "FormatError", (r"ms1m/train\.rec", r"no such file or folder",
                                                        r"RecordIO \.rec file")),
    # --- pixel cap (decode.py): refused from the header, before decoding
    MalformedCase("bin-image-over-pixel-cap", ".bin pair image above the pixel cap", "pairs_bin.decode_pairs",
                  _m_bin_over_cap, "FormatError",
                  (r"lfw\.bin", r"image 0", r"112x112 = 12544 pixels", r"refused before decoding")),
    MalformedCase("rec-image-over-pixel-cap", "RecordIO image above the pixel cap", "RecordIODataset.load_image",
                  _m_rec_over_cap, "FormatError", (r"faces\.rec", r"record 2", r"at most 10000 pixels", r"112x112")),
    # --- IJB meta
    MalformedCase("ijb-pair-unknown-template", "1:1 pair row naming a template absent from tid_mid",
                  "ijb_meta.load_ijb_meta", _m_ijb_unknown_pair_template, "FormatError",
                  (r"ijbc_template_pair_label\.txt", r"line 2", r"template ids listed in ijbc_face_tid_mid\.txt",
                   r"77")),
    MalformedCase("ijb-1n-unknown-template", "1:N probe row naming an unknown template",
                  "ijb_meta.load_ijb_1n_meta", _m_ijb_unknown_1n_template, "FormatError",
                  (r"ijbc_1N_probe_mixed\.csv", r"(record 2|line 3)", r"TEMPLATE_ID listed", r"99")),
    MalformedCase("ijb-5pts-nan", "landmark file row with a NaN coordinate", "ijb_meta.load_ijb_meta",
                  _m_ijb_5pts_nan, "FormatError", (r"ijbc_name_5pts_score\.txt", r"line 2", r"finite")),
    MalformedCase("ijb-tid-mid-fields", "tid_mid row with 2 of 3 fields", "ijb_meta.read_template_media_list",
                  _m_ijb_tid_mid_fields, "FormatError", (r"ijbb_face_tid_mid\.txt", r"line 2", r"3 fields")),
    MalformedCase("ijb-template-id-overflow", "template id beyond int64", "ijb_meta.read_template_media_list",
                  _m_ijb_big_template_id, "FormatError", (r"ijbb_face_tid_mid\.txt", r"line 2", r"template id",
                                                          r"fits int64")),
    MalformedCase("ijb-pair-id-overflow", "pair-list template id beyond int64", "ijb_meta.read_template_pair_list",
                  _m_ijb_big_pair_template, "FormatError", (r"ijbb_template_pair_label\.txt", r"line 2",
                                                             r"template id that fits int64")),
    MalformedCase("ijb-csv-id-overflow", "1:N gallery TEMPLATE_ID beyond int64", "ijb_meta.read_template_subject_csv",
                  _m_ijb_big_csv_template, "FormatError", (r"ijbc_1N_gallery_G1\.csv", r"line 3", r"fits int64")),
    MalformedCase("align-nan-landmarks", "5-point landmarks with NaN handed to alignment", "data.align.align_face",
                  _m_align_nan, "FormatError", (r"landmarks", r"finite")),
    # --- .bin
    MalformedCase("bin-count-mismatch", ".bin with 3 images for 2 pairs", "pairs_bin.load_bin",
                  _m_bin_counts, "FormatError", (r"cfp_fp\.bin", r"3 images for 2 pairs")),
    MalformedCase("bin-truncated", ".bin pickle cut inside an image", "pairs_bin.load_bin",
                  _m_bin_not_pickle, "FormatError", (r"lfw\.bin", r"valid pickle")),
    MalformedCase("bin-object-array", ".bin whose issame is a numpy object array (not plain data)",
                  "pairs_bin.load_bin", _m_bin_object_array, "UnsafeFileError",
                  (r"val\.bin", r"refusing to unpickle numpy data of dtype", r"only bool, int, uint, float")),
    # --- configs
    MalformedCase("config-unknown-key", "config with a misspelt key", "config.load_config",
                  lambda t: _config(t, "optim:\n  lrr: 0.1\n"), "ConfigError",
                  (r"unknown key 'optim\.lrr'", r"allowed keys here: optimizer, lr, momentum")),
    MalformedCase("config-wrong-type", "config value of the wrong type", "config.load_config",
                  lambda t: _config(t, "optim:\n  lr: fast\n"), "ConfigError",
                  (r"optim\.lr", r"expected a number, got 'fast'")),
    MalformedCase("config-bad-choice", "config value outside its allowed set", "config.load_config",
                  lambda t: _config(t, "head:\n  name: arcfase\n"), "ConfigError",
                  (r"head\.name", r"'arcfase' is not one of arcface, cosface, combined")),
    MalformedCase("config-override-unknown", "override of an unknown key", "config.load_config(overrides)",
                  _m_override_unknown,
                  "ConfigError", (r"override 'cd\.nume=3'", r"unknown key 'cd\.nume'",
                                  r"allowed keys here: interval")),
    MalformedCase("config-yaml-syntax", "config that is not YAML", "config.load_config",
                  lambda t: _config(t, "optim: [1, 2\n"), "ConfigError",
                  (r"stage2\.yaml", r"not valid YAML", r"line \d+")),
    MalformedCase("config-not-utf8", "config file that is not UTF-8 text", "config.load_config",
                  _m_config_not_utf8, "ConfigError", (r"stage2\.yaml", r"UTF-8|decode")),
    MalformedCase("config-base-nul", "`base:` naming a path with a NUL byte", "config.load_config",
                  _m_config_base_nul, "ConfigError", (r"stage2\.yaml", r"base")),
    MalformedCase("config-deep-nesting", "config nesting 3000 lists deep", "config.load_config",
                  _m_config_deep, "ConfigError", (r"stage2\.yaml", r"nested too deeply")),
    MalformedCase("config-error-names-file", "unknown key in a config file: the file is named",
                  "config.load_config", lambda t: _config(t, "model:\n  archh: ir100\n"), "ConfigError",
                  (r"stage2\.yaml", r"unknown key 'model\.archh'")),
    MalformedCase("config-base-error-names-base", "bad value in a `base:` file: that file is named",
                  "config.load_config", _m_config_base_error, "ConfigError",
                  (r"stage1\.yaml: optim\.lr", r"expected a number")),
    MalformedCase("config-check-names-file", "cross-field check failing on a file's value: the file is named",
                  "config.load_config", lambda t: _config(t, "cd:\n  percentile: 2\n"), "ConfigError",
                  (r"stage2\.yaml: cd\.percentile", r"must be in \(0, 1\)")),
    # --- MegaFace devkit
    MalformedCase("opencv-size", "feature file shorter than its header says", "megaface_io.read_opencv_matrix",
                  _m_opencv_size, "FormatError", (r"probe_feat\.bin", r"data", r"32 bytes for a 4x1 matrix, got 24")),
    MalformedCase("opencv-type", "feature file of an unknown OpenCV type", "megaface_io.read_opencv_matrix",
                  _m_opencv_type, "FormatError", (r"probe_feat\.bin", r"header", r"type 5 \(CV_32F\)")),
    MalformedCase("feature-dims-disagree", "per-image feature files of different dimensions",
                  "megaface_io.read_feature_files", _m_feature_dims, "FormatError",
                  (r"b\.jpg_feat\.bin", r"3")),
    MalformedCase("feature-list-json", "devkit feature list that is not JSON", "megaface_io.read_feature_list_json",
                  _m_feature_json, "FormatError", (r"facescrub_features_list\.json", r"line 2", r"valid JSON")),
    MalformedCase("noise-list-encoding", "noise list that is not UTF-8", "megaface_io.read_noise_list",
                  _m_noise_list_encoding, "FormatError", (r"megaface_noises\.txt", r"UTF-8")),
    MalformedCase("feature-list-directory", "devkit feature list path that is a directory",
                  "megaface_io.read_feature_list_json", _m_feature_list_directory, "FormatError",
                  (r"megaface_features_list\.json_1000000_1", r"readable text file")),
    # --- checkpoints / model files
    MalformedCase("backbone-other-arch", "IResNet-tiny weights loaded as MobileFaceNet (--arch)",
                  "inference.loading.load_embedding_model", _m_other_arch, "FormatError",
                  (r"r_tiny_backbone\.pth", r"weights for mobilefacenet", r"missing key", r"unexpected key",
                   r"looks like iresnet_tiny")),
    MalformedCase("backbone-other-arch-model-json", "run folder whose model.json names another architecture",
                  "inference.loading.load_embedding_model", _m_other_arch_model_json, "FormatError",
                  (r"backbone\.pt", r"missing key", r"unexpected key")),
    MalformedCase("checkpoint-truncated", "checkpoint cut short after its .sha256 was written",
                  "train.checkpoint.load_checkpoint", _m_checkpoint_truncated, "CheckpointError",
                  (r"ckpt_00000003\.pt", r"checksum")),
    MalformedCase("checkpoint-junk", "checkpoint file that is not a torch file", "train.checkpoint.load_checkpoint",
                  _m_checkpoint_junk, "CheckpointError", (r"ckpt_00000004\.pt", r"not a readable checkpoint")),
    MalformedCase("init-from-other-arch", "stage-2 init_from a checkpoint of another architecture",
                  "train.trainer.fit", _m_init_from_other_arch, "CdfaceError",
                  (r"stage1_ckpt\.pt", r"missing key")),
    MalformedCase("init-from-no-scores", "stage-2 init_from a checkpoint without difficulty scores",
                  "train.trainer.fit", _m_init_from_no_scores, "CdfaceError",
                  (r"stage1_ckpt\.pt", r"scores")),
]
