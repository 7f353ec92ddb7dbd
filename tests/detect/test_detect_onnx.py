"""ONNX detectors: SCRFD/RetinaFace decoding (against insightface's formulas, written here as slow loops) on
small graphs with the same outputs, YuNet through OpenCV, and the choice of decoder from a graph's outputs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cdface.detect import create_detector  # noqa: E402
from cdface.detect.onnx_detectors import choose_decoder  # noqa: E402
from cdface.detect.scrfd import SCRFDDetector  # noqa: E402
from cdface.detect.yunet import YuNetDetector, yunet_faces  # noqa: E402
from cdface.errors import FormatError  # noqa: E402


def _constant_graph(path, input_shape, outputs: list[np.ndarray], names: list[str] | None = None):
    """A graph with one image input and the given arrays as its outputs, in order."""
    names = names or [f"out{k}" for k in range(len(outputs))]
    nodes = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(a.astype(np.float32), n + "_v"))
             for n, a in zip(names, outputs)]
    graph = helper.make_graph(
        nodes, "det", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in zip(names, outputs)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _scrfd_outputs(rng, size, strides, anchors, keypoints=True, batched=False):
    scores, boxes, points = [], [], []
    for stride in strides:
        rows = (size // stride) ** 2 * anchors
        s = rng.uniform(0, 0.45, (rows, 1))
        s[rng.choice(rows, min(rows, 3), replace=False)] = rng.uniform(0.5, 1.0, (min(rows, 3), 1))
        scores.append(s)
        boxes.append(rng.uniform(0.5, 3.0, (rows, 4)))
        points.append(rng.normal(0, 1.0, (rows, 10)))
    out = scores + boxes + (points if keypoints else [])
    return [o[None] for o in out] if batched else out


def _slow_nms(dets, threshold):
    order = sorted(range(len(dets)), key=lambda i: -dets[i][4])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            a, b = dets[i], dets[j]
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
            inter = w * h
            union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
            if inter / union > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def _reference(outputs, strides, anchors, size, image_h, image_w):
    """insightface's SCRFD.detect, cell by cell: letterbox scale, anchor centres, distance2bbox/kps, NMS 0.4."""
    if image_h / image_w > 1.0:
        new_h = size
        new_w = int(new_h / (image_h / image_w))
    else:
        new_w = size
        new_h = int(new_w * (image_h / image_w))
    det_scale = new_h / image_h
    n = len(strides)
    dets = []
    for k, stride in enumerate(strides):
        score, dist, kps = (np.asarray(outputs[k + j * n]).reshape(-1, (1, 4, 10)[j]) for j in range(3))
        row = 0
        for y in range(size // stride):
            for x in range(size // stride):
                for _ in range(anchors):
                    if score[row, 0] >= 0.5:
                        cx, cy = x * stride, y * stride
                        d, p = dist[row] * stride, kps[row] * stride
                        box = [cx - d[0], cy - d[1], cx + d[2], cy + d[3]]
                        pts = [[cx + p[2 * i], cy + p[2 * i + 1]] for i in range(5)]
                        dets.append([v / det_scale for v in box] + [float(score[row, 0])]
                                    + [[u / det_scale, v / det_scale] for u, v in pts])
                    row += 1
    return [dets[i] for i in _slow_nms(dets, 0.4)]


@pytest.mark.parametrize("case", ["9 outputs", "9 outputs batched", "15 outputs"])
@pytest.mark.parametrize("image_hw", [(64, 64), (50, 100), (120, 70)])
def test_scrfd_decoding_matches_insightface_formulas(tmp_path, case, image_hw):
    rng = np.random.default_rng(len(case) * 100 + image_hw[0])
    strides, anchors, size = ((8, 16, 32), 2, 64) if case.startswith("9") else ((8, 16, 32, 64, 128), 1, 128)
    outputs = _scrfd_outputs(rng, size, strides, anchors, batched="batched" in case)
    path = _constant_graph(tmp_path / "det.onnx", [1, 3, size, size], outputs)
    detector = create_detector(str(path))
    assert isinstance(detector, SCRFDDetector)
    image = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    faces = detector.detect(image)
    want = _reference(outputs, strides, anchors, size, *image_hw)
    assert len(faces) == len(want) > 0
    for face, ref in zip(faces, want):
        np.testing.assert_allclose(face.box, ref[:4], rtol=1e-5, atol=1e-3)
        assert face.score == pytest.approx(ref[4], abs=1e-6)
        np.testing.assert_allclose(face.landmarks, np.array(ref[5:]), rtol=1e-5, atol=1e-3)


def test_scrfd_input_is_the_letterboxed_rgb_photo(tmp_path):
    """The graph sees (x - 127.5) / 128 of the photo resized into the top-left of the canvas, RGB first."""
    import onnxruntime as ort

    size = 64
    outputs = _scrfd_outputs(np.random.default_rng(0), size, (8, 16, 32), 2)
    detector = create_detector(str(_constant_graph(tmp_path / "det.onnx", [1, 3, size, size], outputs)))
    seen = {}

    class Spy:
        def __init__(self, session):
            self.session = session

        def run(self, names, feeds):
            seen.update(feeds)
            return self.session.run(names, feeds)

    assert isinstance(detector.session, ort.InferenceSession)
    detector.session = Spy(detector.session)
    image = np.zeros((32, 64, 3), np.uint8)
    image[..., 0] = 255  # pure red
    detector.detect(image)
    blob = seen["input.1"]
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert blob[0, 0, :32].min() == pytest.approx((255 - 127.5) / 128)  # red channel first, top half
    assert blob[0, 1:, :32].max() == pytest.approx(-127.5 / 128)
    assert blob[0, :, 32:].max() == pytest.approx(-127.5 / 128)  # the canvas below the photo is black


def test_graph_without_keypoints_is_refused(tmp_path):
    outputs = _scrfd_outputs(np.random.default_rng(1), 64, (8, 16, 32), 2, keypoints=False)
    path = _constant_graph(tmp_path / "nokps.onnx", [1, 3, 64, 64], outputs)
    with pytest.raises(FormatError, match="nokps.onnx.*5 keypoints") as err:
        create_detector(str(path))
    assert "\n" not in str(err.value)


def test_unknown_graph_is_one_line_error(tmp_path):
    path = _constant_graph(tmp_path / "classifier.onnx", [1, 3, 64, 64], [np.zeros((1, 1000))])
    with pytest.raises(FormatError, match=r"classifier.onnx.*a face detector.*out0\(1, 1000\)") as err:
        create_detector(str(path))
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(FormatError, match="broken.onnx.*onnxruntime"):
        create_detector(str(broken))


def test_choose_decoder_from_outputs():
    yunet = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)]
    assert choose_decoder(yunet, [[1, 100, 1]] * 12) == "yunet"
    nine = [[12800, 1], [3200, 1], [800, 1], [12800, 4], [3200, 4], [800, 4], [12800, 10], [3200, 10], [800, 10]]
    assert choose_decoder([str(i) for i in range(9)], nine) == "scrfd"
    assert choose_decoder([str(i) for i in range(9)], [["n", 1]] * 3 + [["n", 4]] * 3 + [["n", 10]] * 3) == "scrfd"
    assert choose_decoder([str(i) for i in range(6)], nine[:6]) == "scrfd-no-keypoints"
    swapped = nine[3:6] + nine[:3] + nine[6:]
    assert choose_decoder([str(i) for i in range(9)], swapped) == ""  # boxes where scores belong
    assert choose_decoder(["a", "b"], [[1, 2], [1, 4]]) == ""


def test_yunet_rows_map_to_faces():
    # OpenCV's row: x, y, w, h, right eye (on the image's left), left eye, nose, right mouth corner, left one, score
    rows = np.array([
        [10, 20, 30, 40, 15, 30, 30, 31, 22, 40, 17, 50, 29, 51, 0.8],
        [100, 5, 20, 25, 104, 12, 114, 12, 109, 18, 105, 24, 113, 24, 0.95],
    ], np.float32)
    faces = yunet_faces(rows)
    assert [f.score for f in faces] == pytest.approx([0.95, 0.8])
    np.testing.assert_allclose(faces[1].box, [10, 20, 40, 60])
    np.testing.assert_allclose(faces[1].landmarks, [[15, 30], [30, 31], [22, 40], [17, 50], [29, 51]])
    assert faces[1].landmarks[0, 0] < faces[1].landmarks[1, 0]  # the image-left eye first (ArcFace order)
    assert yunet_faces(None) == []


def _yunet_graph(path):
    """A YuNet-shaped graph: every output from the input's average over each stride's cells. cls and obj are
    the first channel (blue, in OpenCV's BGR) / 255, so a blue patch is a "face" and a red one is not."""
    nodes, outputs, inits = [], [], []
    widths = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
    for kind, width in widths.items():
        for s in (8, 16, 32):
            name = f"{kind}_{s}"
            weight = np.zeros((width, 3, 1, 1), np.float32)
            bias = np.zeros(width, np.float32)
            if kind in ("cls", "obj"):
                weight[0, 0] = 1 / 255
            if kind == "kps":
                bias[:] = np.linspace(-0.3, 0.3, 10)
            inits += [numpy_helper.from_array(weight, name + "_w"), numpy_helper.from_array(bias, name + "_b"),
                      numpy_helper.from_array(np.array([1, -1, width], np.int64), name + "_shape")]
            nodes += [helper.make_node("AveragePool", ["input"], [name + "_p"], kernel_shape=[s, s], strides=[s, s]),
                      helper.make_node("Conv", [name + "_p", name + "_w", name + "_b"], [name + "_c"]),
                      helper.make_node("Transpose", [name + "_c"], [name + "_t"], perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [name + "_t", name + "_shape"], [name])]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "yunet", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             [1, 3, 64, 64])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_yunet_through_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = _yunet_graph(tmp_path / "face_detection_yunet_tiny.onnx")
    detector = create_detector(str(path))
    assert isinstance(detector, YuNetDetector)
    image = np.zeros((64, 64, 3), np.uint8)
    image[0:32, 32:64, 2] = 255  # a blue patch (RGB)
    faces = detector.detect(image)
    direct = cv2.FaceDetectorYN.create(str(path), "", (64, 64), 0.9, 0.3, 5000)
    _, rows = direct.detect(np.ascontiguousarray(image[:, :, ::-1]))
    assert rows is not None and len(faces) == len(rows) > 0
    want = yunet_faces(rows)
    for got, ref in zip(faces, want):
        np.testing.assert_allclose(got.box, ref.box)
        np.testing.assert_allclose(got.landmarks, ref.landmarks)
    for face in faces:  # found on the patch: top right quarter
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        assert 28 <= cx <= 68 and -4 <= cy <= 36
    red = np.zeros((64, 64, 3), np.uint8)
    red[0:32, 32:64, 0] = 255  # the same patch in red: OpenCV must be given BGR, where it is not "blue"
    assert detector.detect(red) == []
