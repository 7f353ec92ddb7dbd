"""A hand-written model card (docs/inference.md "A model card for any other model"): a key spelt as other tools
spell it (`input_mean`, `colour`, ...) must not be ignored silently (the model would run on the project default
while the warning says no card exists), and a single JSON number for mean / std stands for three, as the
error text and the command-line flags promise."""

from __future__ import annotations

import json

import pytest

from cdface.errors import FormatError
from cdface.inference.input_config import read_model_json


@pytest.mark.parametrize("key, ours", [("input_mean", "mean"), ("colour", "color"), ("input_std", "std"),
                                       ("image_size", "input_size")])
def test_a_card_key_spelt_another_way_is_one_line_naming_file_and_key(tmp_path, key, ours):
    card = tmp_path / "m.json"
    card.write_text(json.dumps({key: [0.485, 0.456, 0.406] if "size" not in key else [112, 112]}))
    with pytest.raises(FormatError) as info:
        read_model_json(card)
    text = str(info.value)
    assert text.startswith(str(card)) and repr(key) in text and repr(ours) in text and "\n" not in text


def test_a_single_number_mean_or_std_stands_for_three(tmp_path):
    from cdface.models.input_contract import resolve_input_cfg

    card = tmp_path / "m.json"
    card.write_text(json.dumps({"mean": 0.5, "std": 0.25, "color": "BGR"}))
    cfg = resolve_input_cfg(read_model_json(card))
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.25, 0.25, 0.25) and cfg["color"] == "BGR"
