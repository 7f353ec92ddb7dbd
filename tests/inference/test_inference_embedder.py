"""FaceEmbedder: flip fusion, normalisation, colour order, inputs of every kind; compare()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_helpers import normalise, random_faces, tiny_net

from cdface.inference import FaceEmbedder, compare


def _manual(net: torch.nn.Module, faces: np.ndarray) -> np.ndarray:
    """Flip fusion written out: f(x) + f(mirror(x)), then L2-normalised."""
    with torch.no_grad():
        fused = net(normalise(faces)) + net(normalise(faces[:, :, ::-1].copy()))
    fused = fused.numpy()
    return fused / np.linalg.norm(fused, axis=1, keepdims=True)


def test_flip_fusion_matches_manual_and_batches_agree():
    net = tiny_net()
    faces = random_faces(5)
    expected = _manual(net, faces)
    for batch_size in (1, 2, 64):  # batching must not change anything
        got = FaceEmbedder(net, device="cpu", batch_size=batch_size).embed(faces)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_no_flip_and_raw_output():
    net = tiny_net()
    faces = random_faces(3)
    raw = FaceEmbedder(net, device="cpu", flip=False).embed(faces, normalize=False)
    with torch.no_grad():
        np.testing.assert_allclose(raw, net(normalise(faces)).numpy(), atol=1e-5)


def test_input_kinds_and_colour_order(tmp_path):
    from PIL import Image

    net = tiny_net()
    faces = random_faces(3)
    embedder = FaceEmbedder(net, device="cpu")
    reference = embedder.embed(faces)
    np.testing.assert_allclose(embedder.embed(faces[0]), reference[:1], atol=1e-6)  # one HWC image
    np.testing.assert_allclose(embedder.embed(list(faces)), reference, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(torch.from_numpy(faces)), reference, atol=1e-6)
    chw = [torch.from_numpy(f).permute(2, 0, 1) for f in faces]
    np.testing.assert_allclose(embedder.embed(chw), reference, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(faces[..., ::-1].copy(), color="BGR"), reference, atol=1e-6)
    paths = []
    for i, face in enumerate(faces):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(face).save(paths[-1])  # PNG: lossless
    np.testing.assert_allclose(embedder.embed(paths), reference, atol=1e-6)
    np.testing.assert_allclose(embedder.embed([str(p) for p in paths], color="BGR"), reference, atol=1e-6)
    with pytest.raises(ValueError, match="color"):
        embedder.embed(faces, color="YUV")


def test_align_recovers_a_crop():
    from cdface.data.align import ARCFACE_TEMPLATE

    face = random_faces(1)[0]
    canvas = np.zeros((200, 220, 3), np.uint8)
    canvas[40:152, 60:172] = face
    embedder = FaceEmbedder(tiny_net(), device="cpu")
    crop = embedder.align(canvas, ARCFACE_TEMPLATE + np.array([60.0, 40.0]))
    assert crop.shape == (112, 112, 3)
    np.testing.assert_array_equal(crop, face)


def test_compare():
    a = np.array([1.0, 0.0, 0.0])
    assert compare(a, a * 3) == pytest.approx(1.0)
    assert compare(a, np.array([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    assert compare(torch.tensor([1.0, 1.0]), [-1.0, -1.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        compare([1.0, 0.0], [1.0, 0.0, 0.0])


def test_top_level_lazy_exports():
    import cdface

    assert cdface.FaceEmbedder is FaceEmbedder
    assert cdface.compare is compare


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_stays_close(precision):
    net = tiny_net()
    faces = random_faces(4)
    full = FaceEmbedder(net, device="cpu").embed(faces)
    low = FaceEmbedder(net, device="cpu", precision=precision).embed(faces)
    assert low.dtype == np.float32
    cosines = np.sum(full * low, axis=1)
    assert np.all(cosines > 0.99), cosines
    with pytest.raises(ValueError, match="precision"):
        FaceEmbedder(net, precision="int4")


def test_a_list_of_differently_sized_images_is_resized_per_image():
    from cdface.data.align import resize_bilinear

    net = tiny_net()
    faces = random_faces(2)
    big = resize_bilinear(faces[1], 130, 120)
    got = FaceEmbedder(net, device="cpu").embed([faces[0], big])
    expected = FaceEmbedder(net, device="cpu").embed(np.stack([faces[0], resize_bilinear(big, 112, 112)]))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_training_only_options_never_reach_the_evaluated_model(tmp_path):
    import json

    from cdface.inference.loading import load_embedding_model
    from cdface.models import create_model

    model = create_model("iresnet18", embedding_size=8, fp16=True)
    torch.save(model.state_dict(), tmp_path / "backbone.pt")
    card = {"arch": "iresnet18", "embedding_size": 8, "model_kwargs": {"fp16": True, "gradient_checkpointing": True}}
    (tmp_path / "model.json").write_text(json.dumps(card))
    loaded = load_embedding_model(tmp_path, device="cpu")
    assert loaded.module.fp16 is False and loaded.module.gradient_checkpointing is False
