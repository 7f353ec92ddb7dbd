"""The registry, FLOP counting and the `cdface models` command."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from cdface.errors import ConfigError
from cdface.models import count_flops, create_model, list_models, model_summary, register_model
from cdface.models.cli import register

EXPECTED = {
    "iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200",
    "ir18", "ir34", "ir50", "ir100", "ir152", "ir_se50", "ir_se100", "ir_se152",
    "mobilefacenet",
}


def test_list_models_has_every_family() -> None:
    names = list_models()
    assert EXPECTED <= set(names)
    assert names.index("iresnet18") < names.index("iresnet100")  # natural order


def test_aliases_and_metadata() -> None:
    with torch.device("meta"):
        model = create_model("R100", embedding_size=128, dropout=0.2)
    assert model.arch == "iresnet100"
    assert model.model_kwargs == {"dropout": 0.2}
    assert model.fc.out_features == 128
    with torch.device("meta"):
        assert create_model("IR_101").arch == "ir100"
        assert create_model("mbf").arch == "mobilefacenet"


def test_unknown_name_and_option_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="available: .*iresnet50"):
        create_model("resnet9000")
    with pytest.raises(ConfigError, match="unknown option.*'bogus'.*allowed"):
        create_model("iresnet18", bogus=1)


def test_register_model_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda embedding_size=512: nn.Identity(), name="iresnet50")


def test_count_flops_counts_conv_and_linear_macs() -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 8x8 -> 4x4
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=4)
            self.fc = nn.Linear(8 * 4 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.dw(self.conv(x)).flatten(1))

    model = Tiny().train()
    expected = 8 * 4 * 4 * (3 * 9) + 8 * 4 * 4 * (2 * 9) + 5 * 128
    assert count_flops(model, (8, 8)) == expected
    assert model.training  # mode restored


def test_model_summary_iresnet100() -> None:
    summary = model_summary("r100")
    assert summary["params"] == 65_156_160
    assert summary["trainable_params"] == 65_156_160 - 512  # the frozen feature scale
    # 3x3 convs of stem + 49 blocks, 1x1 downsamples and the fc, counted by hand:
    stem = 112 * 112 * 64 * 27
    blocks = 0
    for width, count, size in ((64, 3, 56), (128, 13, 28), (256, 30, 14), (512, 3, 7)):
        inp = width // 2 if width > 64 else 64
        blocks += (size * 2) ** 2 * width * inp * 9 + size**2 * width * width * 9  # first block, stride 2
        blocks += size**2 * inp * width  # downsample 1x1
        blocks += (count - 1) * 2 * size**2 * width * width * 9
    assert summary["macs"] == stem + blocks + 512 * 7 * 7 * 512
    assert summary["input_size"] == (112, 112)


def test_models_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "--json"])
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    assert by_name["iresnet100"]["params"] == 65_156_160
    assert 0.4e9 < by_name["mobilefacenet"]["macs"] < 0.5e9
