"""The MTCNN detector: on the shared real photos (skipped when ../shared or the weights are absent), and the
cascade's contract with made-up weights (runs anywhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdface.data.align import ARCFACE_TEMPLATE
from cdface.detect.mtcnn import MTCNNDetector
from cdface.detect.mtcnn_nets import SHAPES, MTCNNNets
from cdface.errors import FormatError


@pytest.fixture(scope="module")
def mtcnn(mtcnn_weights):
    return MTCNNDetector()


@pytest.fixture
def photo(shared_dir):
    from cdface.data.decode import decode_image

    return lambda name: decode_image((shared_dir / "data" / "photos" / name).read_bytes())


def _random_weights(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for net, layers in SHAPES.items():
        state = {}
        for layer, shape in layers.items():
            state[f"{layer}.weight"] = torch.randn(shape, generator=gen) * 0.1
            state[f"{layer}.bias"] = torch.zeros(shape[0])
        for k in range(1, {"pnet": 3, "rnet": 4, "onet": 5}[net] + 1):
            channels = [v for key, v in state.items() if key.endswith(".weight")][k - 1].shape[0]
            state[f"prelu{k}.weight"] = torch.full((channels,), 0.25)
        out[net] = state
    return out


def test_group_photo_finds_the_six_faces(mtcnn, photo):
    faces = mtcnn.detect(photo("group_six_faces.jpg"))
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    confident = [f for f in faces if f.score >= 0.95]
    assert len(confident) == 6  # the six people; the two non-faces score near 0.87 (shared/README.md)
    for face in confident:
        assert 80 < face.width < 140 and 100 < face.height < 160  # faces of about 100x130 pixels
        x, y = face.landmarks[:, 0], face.landmarks[:, 1]
        assert (x >= face.box[0] - 2).all() and (x <= face.box[2] + 2).all()
        assert (y >= face.box[1] - 2).all() and (y <= face.box[3] + 2).all()
    centres = np.array([[(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] for f in confident])
    assert np.min(np.linalg.norm(centres[:, None] - centres[None], axis=2) + 1e6 * np.eye(6)) > 100  # six people


def test_no_face_picture_gives_nothing(mtcnn, photo):
    assert mtcnn.detect(photo("no_face_mask_texture.jpg")) == []


def test_aligned_crop_is_found_with_landmarks_in_arcface_order(mtcnn, photo):
    faces = mtcnn.detect(photo("tom_hanks.png"))
    assert len(faces) == 1 and faces[0].score > 0.9
    # the crop is aligned to the ArcFace template: the points found land near the template's, in its order
    # (image-left eye, image-right eye, nose, image-left mouth corner, image-right one)
    distances = np.linalg.norm(faces[0].landmarks[:, None] - ARCFACE_TEMPLATE[None], axis=2)
    assert distances.argmin(axis=1).tolist() == [0, 1, 2, 3, 4]
    assert distances.diagonal().max() < 12  # a slightly turned face: within a few pixels of the template


def test_mirrored_photo_mirrors_the_faces(mtcnn, photo):
    image = photo("kate_siegel.jpg")[::3, ::3].copy()
    (face,), (mirrored,) = mtcnn.detect(image), mtcnn.detect(np.ascontiguousarray(image[:, ::-1]))
    width = image.shape[1]
    # the image-left eye of the mirror is the image-right eye of the photo, mirrored
    swapped = mirrored.landmarks[[1, 0, 2, 4, 3]]
    assert np.abs((width - 1 - swapped[:, 0]) - face.landmarks[:, 0]).max() < 4
    assert np.abs(swapped[:, 1] - face.landmarks[:, 1]).max() < 4


def test_cascade_with_a_pnet_that_finds_nothing_gives_no_face():
    weights = _random_weights()
    weights["pnet"]["conv4_1.bias"] = torch.tensor([20.0, -20.0])  # "not a face" everywhere
    detector = MTCNNDetector(MTCNNNets(weights))
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert detector.detect(image) == []


def test_cascade_output_shapes_with_made_up_weights():
    weights = _random_weights(1)
    for net, layer in (("pnet", "conv4_1"), ("rnet", "dense5_1"), ("onet", "dense6_1")):
        weights[net][f"{layer}.bias"] = torch.tensor([-20.0, 20.0])  # every window "is a face"
    detector = MTCNNDetector(MTCNNNets(weights))
    image = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    boxes, scores, points = detector.detect_arrays(image)
    assert len(boxes) > 0 and boxes.shape[1:] == (4,) and points.shape[1:] == (5, 2)
    assert scores.shape == (len(boxes),) and (scores > 0.7).all()
    faces = detector.detect(image)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_tiny_image_and_bad_input():
    detector = MTCNNDetector(MTCNNNets(_random_weights()))
    assert detector.detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than the smallest face
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector.detect(np.zeros((50, 50), np.uint8))


def test_weights_of_the_wrong_shape_are_a_format_error():
    weights = _random_weights()
    weights["rnet"]["dense4.weight"] = torch.zeros(128, 500)
    with pytest.raises(FormatError, match="rnet.*dense4"):
        MTCNNNets(weights)


def test_candidates_regressed_out_of_the_photo_give_no_face():
    # P-Net calls every window a face but moves every box 50 widths down and right: no crop is left for R-Net
    weights = _random_weights(2)
    weights["pnet"]["conv4_1.bias"] = torch.tensor([-20.0, 20.0])
    weights["pnet"]["conv4_2.bias"] = torch.full((4,), 50.0)
    detector = MTCNNDetector(MTCNNNets(weights))
    image = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert detector.detect(image) == []
