"""Training applies the model's own input contract (issue 19 item 2): the tensors reaching the backbone in the
training loop and in periodic verification are `InputContract.from_model(model)` of the uint8 crops, model.json
records that contract, and crops of another size than the model's input are a one-line config error at start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cdface.cli import main
from cdface.config import config_from_dict
from cdface.data.datasets import RecordIODataset
from cdface.data.decode import encode_jpeg
from cdface.data.pairs_bin import decode_pairs, load_bin, write_bin
from cdface.errors import ConfigError
from cdface.models import InputContract, registry
from cdface.models.tiny import TinyIResNet
from cdface.train.trainer import fit

# not the project default in any field: a pipeline that still normalises with 0.5/0.5 or feeds RGB is caught
ODD_CFG = {"input_size": (112, 112), "mean": (0.2, 0.4, 0.6), "std": (0.25, 0.5, 1.0), "color": "BGR"}


def _register(monkeypatch, name: str, input_cfg: dict, seen: list) -> None:
    """A tiny IResNet under `name` whose input contract is `input_cfg`; its forward inputs go to `seen`."""

    def build(embedding_size: int = 128, dropout: float = 0.0) -> TinyIResNet:
        model = TinyIResNet(embedding_size=embedding_size, dropout=dropout)
        model.input_cfg = dict(input_cfg)
        model.register_forward_pre_hook(lambda module, args: seen.append((module.training, args[0].detach().clone())))
        return model

    monkeypatch.setitem(registry._MODELS, name, build)


def _cfg(tmp_path: Path, rec: str, arch: str, **overrides) -> dict:
    values = {
        "name": "contract", "output_dir": str(tmp_path / "runs"), "batch_size": 16, "max_steps": 2,
        "device": "cpu", "deterministic": True, "tensorboard": False, "log_every": 1, "checkpoint_every": 1000,
        "data": {"kind": "recordio", "path": rec, "num_workers": 0, "flip_p": 0.0},
        "model": {"arch": arch, "embedding_size": 16},
        "optim": {"lr": 0.01, "milestones": []},
    }
    values.update(overrides)
    return values


def _as_rows(images_nhwc: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images_nhwc}


def test_training_verification_and_card_all_use_the_models_contract(monkeypatch, tiny_face_set, tmp_path):
    seen: list[tuple[bool, torch.Tensor]] = []
    _register(monkeypatch, "tiny_odd_contract", ODD_CFG, seen)
    contract = InputContract.from_cfg(ODD_CFG)
    cfg = _cfg(tmp_path, str(tiny_face_set["rec"]), "tiny_odd_contract", verify_every=2,
               data={"kind": "recordio", "path": str(tiny_face_set["rec"]), "num_workers": 0, "flip_p": 0.0,
                     "val_targets": [str(tiny_face_set["bin"])]})
    result = fit(config_from_dict(cfg))
    assert result.step == 2
    train_inputs = [x for training, x in seen if training]
    eval_inputs = [x for training, x in seen if not training]
    assert len(train_inputs) == 2 and eval_inputs

    # training: every input is the contract applied to crops of the training set (flip_p 0: the records as
    # decoded). Inverting the affine map must land on integers that are training images in RGB order.
    dataset = RecordIODataset(tiny_face_set["rec"])
    records = _as_rows(np.stack([dataset.load_image(i) for i in range(len(dataset))]))
    mean = torch.tensor(contract.mean).view(1, 3, 1, 1)
    std = torch.tensor(contract.std).view(1, 3, 1, 1)
    for x in train_inputs:
        assert x.shape == (16, 3, 112, 112)
        pixels = (x * std + mean) * 255.0
        crops = pixels.round()
        assert (pixels - crops).abs().max() < 1e-3 and crops.min() >= 0 and crops.max() <= 255
        rgb = crops.to(torch.uint8).flip(1)  # the model's BGR back to the crops' RGB
        assert torch.equal(contract(rgb), x)
        assert _as_rows(rgb.permute(0, 2, 3, 1).numpy()) <= records

    # periodic verification: the pair images and their mirrors, through the same contract
    pair_images = torch.from_numpy(decode_pairs(load_bin(tiny_face_set["bin"]))).permute(0, 3, 1, 2)
    expected = contract(pair_images)
    assert torch.equal(eval_inputs[0], torch.cat([expected, expected.flip(3)]))  # one pass: images, then mirrors

    # the card records that contract, and inference reading it back applies the same
    card = json.loads((result.run_dir / "model.json").read_text())
    assert {k: card[k] for k in ("input_size", "mean", "std", "color")} == contract.card_fields()
    assert InputContract.from_cfg(card) == contract


def test_a_model_of_another_input_size_is_a_one_line_config_error(monkeypatch, tiny_face_set, tmp_path):
    _register(monkeypatch, "tiny_128", {**ODD_CFG, "input_size": (128, 128)}, [])
    with pytest.raises(ConfigError) as caught:
        fit(config_from_dict(_cfg(tmp_path, str(tiny_face_set["rec"]), "tiny_128")))
    message = str(caught.value)
    assert "\n" not in message
    assert "112x112" in message and "128x128" in message and "tiny_128" in message and "train.rec" in message
    assert not (tmp_path / "runs" / "contract" / "checkpoints").exists() or not any(
        (tmp_path / "runs" / "contract" / "checkpoints").iterdir())


def test_a_verification_set_of_another_size_is_a_config_error(tiny_face_set, tmp_path):
    rng = np.random.default_rng(0)
    small = [encode_jpeg(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(4)]
    bin_path = write_bin(tmp_path / "small.bin", small, [True, False])
    cfg = _cfg(tmp_path, str(tiny_face_set["rec"]), "iresnet_tiny",
               data={"kind": "recordio", "path": str(tiny_face_set["rec"]), "num_workers": 0,
                     "val_targets": [str(bin_path)]})
    with pytest.raises(ConfigError, match=r"small\.bin.*96x96.*iresnet_tiny.*112x112"):
        fit(config_from_dict(cfg))


def test_training_crops_of_another_size_fail_in_one_line_from_the_cli(tmp_path, capsys):
    """An image folder of 96x96 crops for a 112x112 model: `cdface train` exits 2 with one line, no traceback."""
    import cv2

    rng = np.random.default_rng(0)
    for person in ("a", "b"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(tmp_path / "faces" / person / f"{i}.png"), rng.integers(0, 256, (96, 96, 3), np.uint8))
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(_cfg(tmp_path, str(tmp_path / "faces"), "iresnet_tiny", batch_size=4,
                                      data={"kind": "folder", "path": str(tmp_path / "faces"), "num_workers": 0})))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "96x96" in err and "112x112" in err and "iresnet_tiny" in err
