"""Transforms: normalisation, flip, seeding by (seed, epoch, index)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdface.data.datasets import InMemoryDataset
from cdface.data.transforms import EvalTransform, TrainTransform, sample_rng, to_tensor


def _asymmetric(n: int = 1) -> np.ndarray:
    ramp = np.linspace(0, 255, 112).astype(np.uint8)
    image = np.stack([np.broadcast_to(ramp, (112, 112))] * 3, axis=-1)
    return np.repeat(image[None], n, axis=0)


def test_to_tensor_normalisation_matches_reference_formula():
    image = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    reference = ((torch.from_numpy(image).permute(2, 0, 1).float() / 255.0) - 0.5) / 0.5
    assert torch.equal(to_tensor(image), reference)
    assert torch.equal(EvalTransform()(image), reference)


def test_flip_probability_and_direction():
    image = _asymmetric()[0]
    plain = to_tensor(image)
    assert torch.equal(TrainTransform(flip_p=1.0)(image, sample_rng(0, 0, 0)), plain.flip(-1))
    assert torch.equal(TrainTransform(flip_p=0.0)(image, sample_rng(0, 0, 0)), plain)
    flipped = plain.flip(-1).numpy()
    flips = [np.array_equal(TrainTransform()(image, sample_rng(1, 0, i)).numpy(), flipped) for i in range(200)]
    assert 70 < sum(flips) < 130


def test_augmentation_is_a_function_of_seed_epoch_index():
    ds = InMemoryDataset(
        _asymmetric(3),
        np.array([0, 1, 1]),
        transform=TrainTransform(random_resized_crop=(0.7, 1.0), color_jitter=0.2, low_res_prob=0.5),
        seed=3,
    )
    first = [ds[(i, e)][0] for e in range(6) for i in range(3)]
    again = [ds[(i, e)][0] for e in range(6) for i in range(3)]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, again))
    assert len({tuple(t.flatten()[::97].tolist()) for t in first}) > 12  # epochs/indices differ
    ds.set_epoch(4)
    assert torch.equal(ds[2][0], ds[(2, 4)][0])


def test_extra_augmentations_keep_shape_and_range():
    image = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    t = TrainTransform(random_resized_crop=(0.5, 0.8), color_jitter=0.4, low_res_prob=1.0)
    out = t(image, sample_rng(0, 0, 0))
    assert out.shape == (3, 112, 112) and out.min() >= -1 and out.max() <= 1
    assert EvalTransform()(image[:64, :80]).shape == (3, 112, 112)
    with pytest.raises(ValueError):
        TrainTransform(random_resized_crop=(0.9, 0.5))


def test_uint8_output_normalised_later_is_bit_identical():
    import numpy as np
    import torch

    from cdface.data.transforms import TrainTransform, normalize_uint8, sample_rng

    image = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    as_float = TrainTransform(flip_p=0.5)(image, sample_rng(1, 2, 3))
    as_uint8 = TrainTransform(flip_p=0.5, output="uint8")(image, sample_rng(1, 2, 3))
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == (3, 112, 112)
    assert torch.equal(normalize_uint8(as_uint8[None])[0], as_float)


def test_16_bit_png_keeps_the_high_byte():
    import io

    import numpy as np
    from PIL import Image

    from cdface.data.decode import decode_image

    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 256 + 255).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (8, 8, 3)
    assert np.array_equal(decoded[..., 0], np.arange(64, dtype=np.uint8).reshape(8, 8))
