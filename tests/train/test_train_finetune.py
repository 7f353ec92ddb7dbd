"""Fine-tuning: init_from a backbone-only file or another set's run, a new head, frozen parts, a slower backbone."""

from __future__ import annotations

import functools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from train_helpers import tiny_run_config

from cdface.config import FinetuneConfig, OptimConfig, config_from_dict, deep_merge
from cdface.data.datasets import ImageFolderDataset
from cdface.data.extract import extract_recordio
from cdface.errors import ConfigError
from cdface.files import load_weights
from cdface.heads import create_head
from cdface.models import InputContract, create_model
from cdface.train import checkpoint as ckpt
from cdface.train.finetune import class_mean_centres, freeze_backbone
from cdface.train.optim import build_optimizer
from cdface.train.schedule import group_multipliers, lr_multiplier
from cdface.train.trainer import fit

_cfg = functools.partial(tiny_run_config, checkpoint_every=100)


@pytest.fixture(scope="module")
def pretrained(tiny_face_set, tmp_path_factory):
    """A 'pretrained' run: 4 steps on the 12 identities of the tiny set."""
    root = tmp_path_factory.mktemp("pretrained")
    result = fit(config_from_dict(_cfg(root, {"kind": "recordio", "path": str(tiny_face_set["rec"])}, "pre",
                                       max_steps=4)))
    return result.run_dir


@pytest.fixture(scope="module")
def new_identities(tiny_face_set, tmp_path_factory) -> Path:
    """Another set: 6 of the identities as an image folder (48 images)."""
    root = tmp_path_factory.mktemp("new_ids") / "faces"
    extract_recordio(tiny_face_set["rec"], root, classes=list(range(6)))
    return root


def test_fine_tuning_a_backbone_only_file_takes_the_backbone_and_its_card_and_creates_a_head(
    pretrained, new_identities, tmp_path, caplog
):
    # a backbone.pt whose card says the model takes BGR input with its own normalisation
    source = tmp_path / "released"
    source.mkdir()
    shutil.copy(pretrained / "backbone.pt", source / "backbone.pt")
    card = json.loads((pretrained / "model.json").read_text())
    card.update(color="BGR", mean=[0.4, 0.45, 0.5], std=[0.25, 0.25, 0.25])
    (source / "model.json").write_text(json.dumps(card))
    before = load_weights(source / "backbone.pt")

    values = _cfg(tmp_path, {"kind": "folder", "path": str(new_identities)}, "ft",
                  init_from=str(source / "backbone.pt"), max_steps=3,
                  finetune={"head_init": "class_means", "head_init_images": 4, "freeze": ["layer1"],
                            "freeze_bn": True, "backbone_lr_scale": 0.1})
    with caplog.at_level(logging.INFO, logger="cdface.train"):
        result = fit(config_from_dict(values))
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("init_from"))
    assert summary.startswith(f"init_from {source / 'backbone.pt'}: took the backbone (iresnet_tiny, ")
    assert "input BGR mean [0.4, 0.45, 0.5] std [0.25, 0.25, 0.25]" in summary
    assert summary.endswith("created: a new arcface head of 6 classes from the class means of 24 images, "
                            "fresh difficulty scores for 48 samples")

    after = result.backbone.state_dict()
    # trained: the parameters the architecture trains (insightface's IResNet keeps features.weight at 1), not
    # under layer1, and no BatchNorm statistic
    trainable = {n for n, p in create_model("iresnet_tiny", embedding_size=32).named_parameters() if p.requires_grad}
    for key, value in before.items():
        frozen = key.startswith("layer1.") or key not in trainable
        assert torch.equal(after[key], value) == frozen, key
    # the fine-tuned model keeps the input contract it was pretrained with, in its card and its checkpoints
    out_card = json.loads((result.run_dir / "model.json").read_text())
    assert out_card["color"] == "BGR" and out_card["mean"] == [0.4, 0.45, 0.5]
    assert ckpt.load_checkpoint(result.checkpoint)["input_cfg"]["color"] == "BGR"


def test_another_sets_run_is_refused_for_stage_2_and_its_backbone_taken_with_backbone_only(
    pretrained, new_identities, tmp_path, caplog
):
    values = _cfg(tmp_path, {"kind": "folder", "path": str(new_identities)}, "ft", init_from=str(pretrained),
                  max_steps=1)
    refused = (r"96 samples there, 48 here; 12 classes there, 6 here; to fine-tune its backbone on this set "
               r"\(new head, fresh scores\) set finetune.backbone_only=true")
    with pytest.raises(ckpt.CheckpointError, match=refused):
        fit(config_from_dict(values))
    assert not (tmp_path / "runs" / "ft").exists()

    with caplog.at_level(logging.INFO, logger="cdface.train"):
        fit(config_from_dict(deep_merge(values, {"finetune": {"backbone_only": True}})))
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("init_from"))
    assert "took the backbone (iresnet_tiny" in summary and "checkpoint)" in summary
    assert "created: a new arcface head of 6 classes (random, seed 0), fresh difficulty scores for 48" in summary


def test_a_backbone_of_another_architecture_names_both(pretrained, new_identities, tmp_path):
    values = _cfg(tmp_path, {"kind": "folder", "path": str(new_identities)}, "ft",
                  init_from=str(pretrained / "backbone.pt"), model={"arch": "mobilefacenet", "embedding_size": 32})
    with pytest.raises(ConfigError, match=r"its backbone is iresnet_tiny \(embedding 32\), this run builds "
                       r"mobilefacenet .*; set model.arch=iresnet_tiny model.embedding_size=32 \(weights for"):
        fit(config_from_dict(values))


def test_an_onnx_graph_is_refused_with_the_import_command(shared_dir, new_identities, tmp_path):
    onnx = shared_dir / "models" / "mobilefacenet-foamliu.onnx"
    values = _cfg(tmp_path, {"kind": "folder", "path": str(new_identities)}, "ft", init_from=str(onnx))
    with pytest.raises(ConfigError, match=r"holds no trainable module.*cdface models import .*--out backbone.pt"):
        fit(config_from_dict(values))


def test_class_mean_centres_are_the_normalised_means_of_normalised_embeddings(new_identities):
    torch.manual_seed(0)
    backbone = create_model("iresnet_tiny", embedding_size=16)
    dataset = ImageFolderDataset(new_identities)
    contract = InputContract.from_model(backbone)
    centres, used = class_mean_centres(backbone, dataset, contract, torch.device("cpu"), per_class=3, batch_size=5)
    assert used == 18 and centres.shape == (6, 16)
    assert backbone.training  # left as it was found
    backbone.eval()
    with torch.no_grad():
        for c, members in enumerate(dataset.class_to_indices()):
            images = np.stack([dataset.load_image(int(i)) for i in members[:3]])
            emb = F.normalize(backbone(contract(torch.from_numpy(images).permute(0, 3, 1, 2))), dim=1)
            expected = F.normalize(emb.mean(0), dim=0)
            torch.testing.assert_close(centres[c], expected, atol=1e-5, rtol=1e-5)


def test_backbone_lr_scale_and_head_warmup_give_the_backbone_its_own_groups():
    backbone = create_model("iresnet_tiny", embedding_size=8)
    head = create_head("arcface", 8, 5)
    optim = OptimConfig(lr=0.1, scheduler="constant")
    optimizer = build_optimizer(optim, [backbone, head], [0.1, 1.0])
    assert [g["part"] for g in optimizer.param_groups] == [0, 0, 1, 1]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.01, 0.1, 0.1])
    backbone_ids = {id(p) for p in backbone.parameters()}
    for group in optimizer.param_groups:
        assert all((id(p) in backbone_ids) == (group["part"] == 0) for p in group["params"])
    factors = group_multipliers(optimizer.param_groups, lr_multiplier(optim, 10, 100), head_warmup_steps=3)
    assert [f(2) for f in factors] == [0.0, 0.0, 1.0, 1.0]  # the head alone learns
    assert [f(3) for f in factors] == [1.0, 1.0, 1.0, 1.0]
    assert build_optimizer(optim, [backbone, head]).param_groups[0].get("part") is None  # no split: as before


def test_freeze_names_parameters_by_prefix_and_refuses_an_unknown_one():
    backbone = create_model("iresnet_tiny", embedding_size=8)
    frozen = freeze_backbone(backbone, FinetuneConfig(freeze=["layer1", "conv1"]))
    assert frozen.parameters and all(n.startswith(("layer1.", "conv1.")) for n in frozen.parameters)
    assert all(not p.requires_grad for n, p in backbone.named_parameters() if n.startswith("layer1."))
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("layer2."))
    backbone.train()
    frozen.hold()
    assert frozen.norms and all(not m.training for m in frozen.norms)
    with pytest.raises(ConfigError, match=r"finetune.freeze: 'layer9' names no parameter .*its parts are conv1, "):
        freeze_backbone(create_model("iresnet_tiny", embedding_size=8), FinetuneConfig(freeze=["layer9"]))
