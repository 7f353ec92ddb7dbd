"""InputContract: the one preprocessing (colour order, (x/255 - mean)/std) that training and inference share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdface.data.transforms import normalize_uint8, to_tensor
from cdface.errors import ConfigError
from cdface.inference.input_config import read_model_json, write_model_json
from cdface.models import InputContract, create_model


def _images(n: int = 3, size: int = 112, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)  # NHWC RGB


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def test_default_contract_is_arcface_torchs_normalisation_bit_for_bit():
    """ToTensor + Normalize(0.5, 0.5): the float32 (x/255 - 0.5)/0.5 that to_tensor and normalize_uint8 give."""
    images = _images()
    contract = InputContract.from_model(create_model("iresnet_tiny"))
    assert contract == InputContract((112, 112), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "RGB")
    got = contract(_nchw(images))
    assert got.dtype == torch.float32
    assert torch.equal(got, normalize_uint8(_nchw(images)))
    assert torch.equal(got[0], to_tensor(images[0]))
    assert got.min() >= -1.0 and got.max() <= 1.0


def test_bgr_and_per_channel_statistics_follow_the_definition():
    """mean/std are in the model's channel order: the RGB crop is reordered to BGR first, then normalised."""
    images = _images(seed=1)
    mean, std = (0.2, 0.4, 0.6), (0.25, 0.5, 1.0)
    contract = InputContract.from_cfg({"mean": mean, "std": std, "color": "BGR"})
    bgr = images[..., ::-1].astype(np.float32) / np.float32(255.0)
    expected = (bgr - np.array(mean, np.float32)) / np.array(std, np.float32)
    got = contract(_nchw(images)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, expected)
    # a float 0..255 batch (inference resizes in float) gives the same values, and is not modified in place
    as_float = _nchw(images).float()
    kept = as_float.clone()
    assert torch.equal(contract(as_float), contract(_nchw(images)))
    assert torch.equal(as_float, kept)


def test_a_batch_of_another_size_is_refused():
    contract = InputContract.from_cfg({"input_size": (128, 128)})
    with pytest.raises(ValueError, match=r"\(N, 3, 128, 128\).*\(2, 3, 112, 112\)"):
        contract(_nchw(_images(2)))


@pytest.mark.parametrize("bad", [{"std": (0.5, 0.0, 0.5)}, {"color": "GBR"}, {"input_size": (112,)},
                                 {"mean": "a,b,c"}])
def test_malformed_contracts_are_config_errors(bad):
    with pytest.raises(ConfigError):
        InputContract.from_cfg(bad)


def test_the_card_fields_round_trip_through_model_json(tmp_path):
    contract = InputContract((128, 128), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "BGR")
    path = write_model_json(tmp_path / "model.json", contract.as_cfg(), arch="x")
    card = read_model_json(path)
    assert {k: card[k] for k in ("input_size", "mean", "std", "color")} == contract.card_fields()
    assert InputContract.from_cfg(card) == contract
