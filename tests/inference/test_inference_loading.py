"""load_embedding_model: every source kind gives the same numbers as the module itself; unsafe files refused."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import torch
from inference_helpers import MeanColor, normalise, random_faces, tiny_net

from cdface.errors import FormatError, UnsafeFileError
from cdface.inference.export import export_onnx
from cdface.inference.loading import load_embedding_model
from cdface.models import create_model
from cdface.train.checkpoint import save_checkpoint


def _reference(module: torch.nn.Module, images: np.ndarray, **norm) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(normalise(images, **norm)).numpy()


@pytest.fixture(scope="module")
def mbf() -> torch.nn.Module:
    """A registered architecture (the smallest) with a non-default 128-d output."""
    torch.manual_seed(1)
    return create_model("iresnet_tiny", embedding_size=128).eval()


@pytest.fixture(scope="module")
def mbf_ref(mbf) -> tuple[np.ndarray, np.ndarray]:
    faces = random_faces(2)
    return faces, _reference(mbf, faces)


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    """Same numbers up to float32 reordering (random-init outputs are tiny, so relative to their scale)."""
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_module_normalisation_and_colour_order():
    faces = random_faces(3)
    colour = MeanColor()
    rgb = load_embedding_model(colour, device="cpu")(faces)
    expected = normalise(faces).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(rgb, expected, atol=1e-6)
    custom = load_embedding_model(
        colour, device="cpu", input_mean=(0.485, 0.456, 0.406), input_std=(0.229, 0.224, 0.225)
    )(faces)
    expected = normalise(faces, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(custom, expected, atol=1e-5)
    bgr = load_embedding_model(colour, device="cpu", bgr=True)(faces)
    np.testing.assert_allclose(bgr, rgb[:, ::-1], atol=1e-6)


def test_live_module_mode_restored():
    net = tiny_net()
    net.train()
    model = load_embedding_model(net)
    out = model(random_faces(2))
    assert net.training, "the caller's training mode must be restored"
    np.testing.assert_allclose(out, _reference(tiny_net(), random_faces(2)), atol=1e-5)


def test_plain_state_dict_arch_inferred(tmp_path, mbf, mbf_ref):
    path = tmp_path / "weights.pth"
    torch.save({f"module.{k}": v for k, v in mbf.state_dict().items()}, path)  # DataParallel prefix
    model = load_embedding_model(path, device="cpu")
    assert model.arch == "iresnet_tiny"
    faces, ref = mbf_ref
    out = model(faces)
    assert out.shape == (2, 128)
    _close(out, ref)


def test_state_dict_with_model_json_and_explicit_arch(tmp_path, mbf, mbf_ref):
    path = tmp_path / "backbone.pt"
    torch.save(mbf.state_dict(), path)
    (tmp_path / "model.json").write_text(
        json.dumps(
            {
                "arch": "iresnet_tiny",
                "embedding_size": 128,
                "mean": [0.4, 0.4, 0.4],
                "std": [0.2, 0.2, 0.2],
                "color": "BGR",
                "input_size": [112, 112],
            }
        )
    )
    model = load_embedding_model(path, device="cpu")
    assert model.input_cfg["color"] == "BGR" and model.input_cfg["mean"] == (0.4, 0.4, 0.4)
    # explicit arguments beat model.json
    model = load_embedding_model(
        path, arch="iresnet_tiny", device="cpu", bgr=False, input_mean=(0.5,) * 3, input_std=(0.5,) * 3
    )
    faces, ref = mbf_ref
    _close(model(faces), ref)


def test_mismatched_weights_are_a_format_error(tmp_path, mbf):
    path = tmp_path / "w.pt"
    torch.save(mbf.state_dict(), path)
    with pytest.raises(FormatError, match="w.pt"):  # 128-d weights into a 64-d model
        load_embedding_model(path, arch="iresnet_tiny", embedding_size=64, device="cpu")


def test_checkpoint_and_run_directory(tmp_path, mbf, mbf_ref):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = {
        "backbone": mbf.state_dict(),
        "head": {"weight": torch.zeros(3, 128)},
        "step": 7,
        "config": {"model": {"arch": "iresnet_tiny", "embedding_size": 128}, "lr": 0.1},
    }
    save_checkpoint(ckpt, run / "checkpoints", 7)  # atomic, with its sha256 sidecar
    faces, ref = mbf_ref
    from_ckpt = load_embedding_model(run / "checkpoints" / "ckpt_00000007.pt", device="cpu")
    _close(from_ckpt(faces), ref)
    from_dir_ckpt = load_embedding_model(run, device="cpu")  # no backbone.pt yet: newest checkpoint
    assert from_dir_ckpt.source_path.name == "ckpt_00000007.pt"
    torch.save(mbf.state_dict(), run / "backbone.pt")
    (run / "model.json").write_text(json.dumps({"arch": "iresnet_tiny", "embedding_size": 128}))
    from_dir = load_embedding_model(run, device="cpu")
    assert from_dir.source_path.name == "backbone.pt"
    _close(from_dir(faces), ref)


def test_run_directory_skips_a_corrupt_newest_checkpoint_with_a_log_line(tmp_path, mbf, mbf_ref, caplog):
    """The newest checkpoint of a run folder is chosen as resume=auto chooses it: checksum checked."""
    run = tmp_path / "run"
    state = {"backbone": mbf.state_dict(), "config": {"model": {"arch": "iresnet_tiny", "embedding_size": 128}}}
    save_checkpoint(state, run / "checkpoints", 7)
    other = create_model("iresnet_tiny", embedding_size=128).state_dict()
    newest = save_checkpoint(state | {"backbone": other}, run / "checkpoints", 9)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a bit flipped on disk: still a readable zip, wrong weights
    newest.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="cdface.train"):
        model = load_embedding_model(run, device="cpu")
    assert model.source_path.name == "ckpt_00000007.pt"
    assert "ckpt_00000009.pt: skipped" in caplog.text
    faces, ref = mbf_ref
    _close(model(faces), ref)
    (run / "checkpoints" / "ckpt_00000007.pt.sha256").unlink()  # no valid one left: refused, naming the file
    with pytest.raises(FormatError, match=r"ckpt_00000009\.pt: a checkpoint whose \.sha256 sidecar matches"):
        load_embedding_model(run, device="cpu")


def test_compiled_and_ddp_prefixes_load_everywhere(tmp_path, mbf, mbf_ref):
    """`_orig_mod.` (torch.compile) and `module.` (DDP) keys: eval's loader and init_from/resume's
    `load_state_dict_strict` strip them with the same function."""
    from cdface.models import load_state_dict_strict

    compiled = {f"module._orig_mod.{k}": v for k, v in mbf.state_dict().items()}
    path = tmp_path / "compiled.pt"
    torch.save(compiled, path)
    faces, ref = mbf_ref
    _close(load_embedding_model(path, arch="iresnet_tiny", embedding_size=128, device="cpu")(faces), ref)
    fresh = create_model("iresnet_tiny", embedding_size=128)
    load_state_dict_strict(fresh, {f"_orig_mod.{k}": v for k, v in mbf.state_dict().items()}, "x.pt")
    _close(_reference(fresh, faces), ref)


def test_onnx_fixed_batch_runs_in_a_loop(tmp_path):
    net = tiny_net()
    report = export_onnx(net, tmp_path / "tiny.onnx", dynamic_batch=False, check=False)
    assert report.input_shape[0] == 1
    model = load_embedding_model(tmp_path / "tiny.onnx", device="cpu")
    assert model.embedding_size == 16 and model.input_cfg["input_size"] == (112, 112)
    faces = random_faces(3)  # three images through a batch-1 graph
    np.testing.assert_allclose(model(faces), _reference(net, faces), atol=1e-4)


class _Touch:
    """Unpickling this would create a file: the test for 'never executed'."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_with_code_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"backbone": {"w": torch.zeros(1)}, "config": {}, "trap": _Touch(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        load_embedding_model(path, device="cpu")
    assert not marker.exists()


def test_junk_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises((FormatError, UnsafeFileError), match="junk.pth"):
        load_embedding_model(junk, device="cpu")
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(FormatError, match="state_dict"):
        load_embedding_model(not_weights, device="cpu")
    with pytest.raises(FormatError, match="not found"):
        load_embedding_model(tmp_path / "missing.pt", device="cpu")


def test_embedding_size_read_off_the_weights(mbf):
    """Fallback when the keys do not name the architecture: build it on the meta device at two sizes."""
    from cdface.inference.loading import _infer_embedding_size

    assert _infer_embedding_size("iresnet_tiny", mbf.state_dict(), {}) == 128


@pytest.mark.parametrize("card, where", [({"arch": "iresnet_tiny", "embedding_size": "x"}, "key 'embedding_size'"),
                                         ({"arch": "iresnet_tiny", "embedding_size": 0}, "key 'embedding_size'"),
                                         ({"arch": 5}, "key 'arch'")])
def test_a_model_card_with_a_bad_arch_or_embedding_size_is_a_format_error(tmp_path, mbf, card, where):
    # embedding_size "x" reached int(): ValueError, a traceback from cdface eval --model RUN
    torch.save(mbf.state_dict(), tmp_path / "backbone.pt")
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(FormatError, match=rf"model\.json, {where}: "):
        load_embedding_model(tmp_path, device="cpu")


def test_onnx_file_without_the_suffix_is_read_as_onnx(tmp_path):
    """`cdface export --out r50` writes an ONNX file named `r50`: it loads as ONNX, not as a refused pickle."""
    report = export_onnx(MeanColor().eval(), tmp_path / "r50", dynamic_batch=True)
    assert report.ok and (tmp_path / "r50.json").is_file()
    faces = random_faces(3, seed=5)
    model = load_embedding_model(tmp_path / "r50", device="cpu")
    expected = normalise(faces).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(np.asarray(model(faces)), expected, atol=1e-5)
    torch.save(MeanColor().state_dict(), tmp_path / "weights")  # a torch.save zip under no suffix stays torch
    with pytest.raises(FormatError, match="weights"):
        load_embedding_model(tmp_path / "weights", device="cpu")


def test_precision_of_an_onnx_model_is_the_graphs_and_a_request_for_another_is_warned(tmp_path, caplog):
    assert export_onnx(MeanColor().eval(), tmp_path / "m.onnx", dynamic_batch=True).ok
    with caplog.at_level("WARNING", logger="cdface.inference"):
        model = load_embedding_model(tmp_path / "m.onnx", device="cpu", precision="bf16")
    assert "--precision bf16 is ignored for an ONNX model" in caplog.text
    assert model.describe()["precision"] == "onnx graph (float32 input)"  # results.json's model_info
    torch_model = load_embedding_model(tiny_net(), device="cpu", precision="bf16")
    assert torch_model.describe()["precision"] == "bf16"
