"""A ViT through the trainer on CPU (config -> `fit`, synthetic data): two AdamW steps, resume of a ViT run with
masking and stochastic depth on, and the shipped ViT recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cdface.config import config_from_dict, load_config
from cdface.models import create_model, load_state_dict_strict
from cdface.train import checkpoint as ckpt
from cdface.train.trainer import fit, model_options

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, name: str, **overrides) -> dict:
    values = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "batch_size": 4,  # 24 images: 6 steps an epoch
        "epochs": 2.0,
        "device": "cpu",
        "deterministic": True,
        "tensorboard": False,
        "log_every": 1,
        "data": {"kind": "synthetic", "path": str(tmp_path / "faces"), "num_workers": 0,
                 "synthetic_identities": 6, "synthetic_images_per_identity": 4,
                 "synthetic_eval_identities": 4, "synthetic_pairs": 20},
        # vit_tiny: insightface's layout at dim 32, depth 2; masking 0.1 and drop path 0.1 are on in training
        "model": {"arch": "vit_tiny", "embedding_size": 16},
        "optim": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "no_decay_on_bn": False,
                  "scheduler": "poly", "poly_power": 1.0, "warmup_epochs": 0.5, "milestones": [], "grad_clip": 5.0},
    }
    values.update(overrides)
    return values


def test_two_adamw_steps_of_a_vit_through_the_trainer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    start = create_model("vit_tiny", embedding_size=16).state_dict()  # the trainer's init under seed 0
    result = fit(config_from_dict(_cfg(tmp_path, "vit_two_steps", max_steps=2)))
    assert result.step == 2
    losses = [r["ce_loss"] for r in result.history if "ce_loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    lrs = [r["lr"] for r in result.history if "lr" in r]
    assert lrs[0] < lrs[1] <= 1e-3  # still warming up (3 warm-up steps)
    trained = result.backbone.state_dict()
    assert trained.keys() == start.keys()
    changed = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, start[k])]
    assert {"pos_embed", "blocks.1.attn.qkv.weight", "feature.2.weight"} <= set(changed)
    # the exported backbone is a plain insightface-layout state_dict that loads strictly
    exported = torch.load(result.run_dir / "backbone.pt", weights_only=True)
    load_state_dict_strict(create_model("vit_tiny", embedding_size=16), exported, "backbone.pt")


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp_path = tmp_path_factory.mktemp("vit_resume")
    straight = fit(config_from_dict(_cfg(tmp_path, "straight", max_steps=5, checkpoint_every=2)))

    def crash(step: int, loss: torch.Tensor) -> torch.Tensor:
        if step == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt("simulated crash")
        return loss

    cfg = _cfg(tmp_path, "interrupted", max_steps=5, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        fit(config_from_dict(cfg), fault_hook=crash)
    resumed = fit(config_from_dict({**cfg, "resume": "auto"}))
    return tmp_path / "runs", straight, resumed


def test_a_resumed_vit_run_continues_from_its_checkpoint(straight_and_resumed: tuple) -> None:
    runs, straight, resumed = straight_and_resumed
    at_crash = ckpt.load_checkpoint(runs / "interrupted" / "checkpoints" / "ckpt_00000002.pt")
    reference = ckpt.load_checkpoint(runs / "straight" / "checkpoints" / "ckpt_00000002.pt")
    for key, value in reference["backbone"].items():  # the same run up to the crash
        assert torch.equal(at_crash["backbone"][key], value), key
    assert resumed.step == straight.step == 5
    final = ckpt.load_checkpoint(resumed.checkpoint)
    assert final["step"] == 5
    adam_steps = {float(s["step"]) for s in final["optimizer"]["state"].values()}
    assert adam_steps == {5.0}  # AdamW's moments and step count came back with the resume
    assert all(torch.isfinite(v).all() for v in final["backbone"].values() if v.is_floating_point())


def test_a_resumed_vit_run_is_bitwise_equal_to_an_uninterrupted_one(straight_and_resumed: tuple) -> None:
    _, straight, resumed = straight_and_resumed
    a, b = straight.backbone.state_dict(), resumed.backbone.state_dict()
    for key in a:  # masks and drop-path draws after the resume come from the restored RNG
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("webface42m_vit*.yaml")), ids=lambda p: p.stem)
def test_shipped_vit_recipes(path: Path) -> None:
    cfg = load_config(path)
    with torch.device("meta"):
        model = create_model(cfg.model.arch, embedding_size=cfg.model.embedding_size, **model_options(cfg))
    assert model.arch.startswith("vit_") and model.gradient_checkpointing == cfg.model.gradient_checkpointing
    assert cfg.optim.optimizer == "adamw" and cfg.optim.lr <= 1e-3 and cfg.optim.warmup_epochs > 0
    assert cfg.head.sharded and cfg.head.sample_rate == 0.3 and cfg.batch_size % 8 == 0
    if cfg.method == "cd":  # the paper's proportion: the CD samples of a CD step equal the batch
        assert cfg.cd.num_classes * (cfg.cd.num_easy + cfg.cd.num_hard) == cfg.batch_size
        assert cfg.init_from and cfg.head.name == "arcface"
