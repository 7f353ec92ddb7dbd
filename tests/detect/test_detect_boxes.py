"""The MTCNN cascade's pieces against slow, obvious versions written here: NMS, box regression, squaring,
the pyramid's scales and area resampling (against torch's own area interpolation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cdface.detect.boxes import nms, regress_boxes, square_boxes
from cdface.detect.mtcnn import SummedArea, area_windows, pyramid_scales


def _slow_nms(boxes, scores, threshold, overlap, offset):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    keep, removed = [], set()
    for a_pos, a in enumerate(order):
        if a in removed:
            continue
        keep.append(a)
        for b in order[a_pos + 1:]:
            if b in removed:
                continue
            ax1, ay1, ax2, ay2 = boxes[a]
            bx1, by1, bx2, by2 = boxes[b]
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1) + offset)
            ih = max(0.0, min(ay2, by2) - max(ay1, by1) + offset)
            inter = iw * ih
            area_a = (ax2 - ax1 + offset) * (ay2 - ay1 + offset)
            area_b = (bx2 - bx1 + offset) * (by2 - by1 + offset)
            ratio = inter / min(area_a, area_b) if overlap == "min" else inter / (area_a + area_b - inter)
            if ratio > threshold:
                removed.add(b)
    return keep


def _random_boxes(rng, n):
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(4, 40, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("overlap,offset", [("iou", 0.0), ("iou", 1.0), ("min", 1.0), ("min", 0.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_slow_loop(overlap, offset, seed):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 80)
    scores = rng.random(80)
    scores[5] = scores[9]  # a tie: the earlier box wins, as a stable sort keeps it first
    for threshold in (0.3, 0.5, 0.7):
        got = nms(boxes, scores, threshold, overlap, offset)
        assert got.tolist() == _slow_nms(boxes.tolist(), scores.tolist(), threshold, overlap, offset)


def test_nms_keeps_disjoint_and_drops_duplicates():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 11, 11]], float)
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_min_drops_a_box_inside_another():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 30, 30]], float)  # IoU 0.04, but all of the small one inside
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.7, "iou").tolist() == [0, 1]
    assert nms(boxes, scores, 0.7, "min").tolist() == [0]


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_box_regression_formula(offset):
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, 20).astype(np.float32)
    deltas = rng.normal(0, 0.2, (20, 4)).astype(np.float32)
    got = regress_boxes(boxes, deltas, pixel_offset=offset)
    for b, d, g in zip(boxes.tolist(), deltas.tolist(), got.tolist()):
        w, h = b[2] - b[0] + offset, b[3] - b[1] + offset
        want = [b[0] + d[0] * w, b[1] + d[1] * h, b[2] + d[2] * w, b[3] + d[3] * h]
        assert g == pytest.approx(want, abs=1e-3)
    assert got.dtype == np.float32


def test_square_boxes_keep_centre_and_take_longer_side():
    boxes = np.array([[10, 20, 30, 60], [0, 0, 50, 10], [5, 5, 15, 15]], np.float32)
    got = square_boxes(boxes)
    for b, g in zip(boxes.tolist(), got.tolist()):
        side = max(b[2] - b[0], b[3] - b[1])
        assert g[2] - g[0] == pytest.approx(side) and g[3] - g[1] == pytest.approx(side)
        assert (g[0] + g[2]) / 2 == pytest.approx((b[0] + b[2]) / 2)
        assert (g[1] + g[3]) / 2 == pytest.approx((b[1] + b[3]) / 2)


def test_pyramid_scales():
    # 640x480, min face 20: m = 0.6; sides 288, 204.2, ... while >= 12
    scales = pyramid_scales(480, 640, 20, 0.709)
    want, k = [], 0
    while 480 * 0.6 * 0.709**k >= 12 - 1e-9:
        want.append(0.6 * 0.709**k)
        k += 1
    assert scales == pytest.approx(want)
    assert len(scales) == 10
    assert pyramid_scales(11, 500, 12, 0.709) == []  # short side below one 12-pixel window
    assert pyramid_scales(112, 112, 20, 0.709)[0] == pytest.approx(0.6)


@pytest.mark.parametrize("length,size", [(100, 24), (24, 24), (10, 24), (97, 48), (1, 12), (481, 289)])
def test_area_windows_cover_as_torch_area_interpolation(length, size):
    start, end = area_windows(np.array([length]), size)
    x = torch.arange(length, dtype=torch.float64).view(1, 1, length)
    pooled = F.interpolate(x, size=size, mode="area")[0, 0].numpy()
    means = [np.arange(s, e).mean() for s, e in zip(start[0], end[0])]
    np.testing.assert_allclose(pooled, means, rtol=0, atol=1e-9)
    assert (end > start).all()


def test_summed_area_resample_equals_torch_area_interpolation_of_crops():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (57, 83, 3), dtype=np.uint8)
    area = SummedArea(image)
    top, left = np.array([0, 5, 30, 56]), np.array([0, 7, 2, 80])
    bottom, right = np.array([57, 40, 51, 57]), np.array([83, 30, 70, 83])
    got = area.resample(top, left, bottom, right, 24, 24)
    for k in range(4):
        crop = torch.from_numpy(image[top[k]:bottom[k], left[k]:right[k]].transpose(2, 0, 1)[None].astype(np.float64))
        want = F.interpolate(crop, size=(24, 24), mode="area")[0].numpy()
        np.testing.assert_allclose(got[k].transpose(2, 0, 1), want, rtol=0, atol=1e-4)
    whole = area.resample(np.array([0]), np.array([0]), np.array([57]), np.array([83]), 35, 50)
    want = F.adaptive_avg_pool2d(torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float64)), (35, 50))
    np.testing.assert_allclose(whole.transpose(0, 3, 1, 2), want.numpy(), rtol=0, atol=1e-4)
