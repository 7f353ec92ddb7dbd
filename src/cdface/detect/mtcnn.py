"""MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks",
IEEE SPL 2016): the default detector, with the weights of the facenet-pytorch wheel.

The cascade, step for step as facenet-pytorch 2.6.0's ``MTCNN.detect`` at its defaults (its numbers are the
reference: same faces, boxes and landmarks within a pixel):

1. Image pyramid: scales ``12 / min_face_size * factor**k`` while the short side times the scale is >= 12;
   each level is the photo resampled by area averaging to ``int(h * s + 1) x int(w * s + 1)``.
2. P-Net on every level: each 12x12 window (stride 2) scoring >= thresholds[0] gives the box
   ``floor((2 * cell + 1) / s), floor((2 * cell + 12) / s)``; NMS (IoU 0.5) per level, then NMS (IoU 0.7)
   over all levels; box regression (``w = x2 - x1``); boxes squared.
3. R-Net on 24x24 area-resampled crops of those squares (clipped to the photo, not padded): score >
   thresholds[1]; NMS (IoU 0.7); box regression (``w = x2 - x1 + 1``); squared again.
4. O-Net on 48x48 crops: score > thresholds[2]; landmarks from the O-Net box before its regression
   (``x1 - 1 + fraction * (x2 - x1 + 1)``); box regression; NMS by the intersection over the smaller box
   ("Min", 0.7, inclusive pixel areas).

Crops of every candidate box are resampled at once from one summed-area table of the photo (exact sums, the
same windows as torch's area interpolation), so the refinement stages have no loop over boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cdface.detect.boxes import nms, regress_boxes, square_boxes
from cdface.detect.face import DetectedFace
from cdface.detect.mtcnn_nets import MTCNNNets

__all__ = ["MTCNNConfig", "MTCNNDetector", "pyramid_scales", "area_windows", "SummedArea", "check_image"]


@dataclass(frozen=True)
class MTCNNConfig:
    """facenet-pytorch's defaults. min_face_size: pixels; thresholds: the three stages' score thresholds;
    factor: the pyramid's scale step."""

    min_face_size: float = 20.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709


def check_image(image: np.ndarray) -> np.ndarray:
    """The (H, W, 3) uint8 array a detector takes; ValueError for anything else."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a detector takes a (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def pyramid_scales(height: int, width: int, min_face_size: float = 20.0, factor: float = 0.709) -> list[float]:
    """The pyramid's scales: ``m = 12 / min_face_size``, then ``m * factor**k`` for as long as
    ``min(height, width) * m * factor**k >= 12`` (the product accumulated as MTCNN's reference does)."""
    scale = 12.0 / min_face_size
    side = min(height, width) * scale
    scales: list[float] = []
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def area_windows(length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows of area resampling (torch's ``interpolate(mode="area")``, i.e. adaptive average pooling)
    of spans of ``length`` pixels to ``size`` cells: cell i covers ``[floor(i * L / size), ceil((i + 1) * L
    / size))``. length: (N,) int; returns start, end: (N, size) int64, relative to the span."""
    length = np.asarray(length, dtype=np.int64)[:, None]
    i = np.arange(size, dtype=np.int64)[None, :]
    return (i * length) // size, ((i + 1) * length + size - 1) // size


class SummedArea:
    """A summed-area table of one (H, W, 3) uint8 photo: the mean of any axis-aligned pixel rectangle in
    four look-ups, exactly (integer sums; int32 while 255 * H * W fits, else int64)."""

    def __init__(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        dtype = np.int32 if 255 * h * w < 2**31 else np.int64
        table = np.zeros((h + 1, w + 1, 3), dtype=dtype)
        np.cumsum(image, axis=0, dtype=dtype, out=table[1:, 1:])
        np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
        self.width = w + 1
        self.flat = table.reshape(-1, 3)  # row-major: pixel (r, c) of the table at r * (w + 1) + c

    def resample(self, top: np.ndarray, left: np.ndarray, bottom: np.ndarray, right: np.ndarray,
                 out_h: int, out_w: int) -> np.ndarray:
        """Area-resample the rectangles rows [top, bottom) x cols [left, right) (each (N,) int, non-empty,
        inside the photo) to (N, out_h, out_w, 3) float32 means."""
        r0, r1 = area_windows(bottom - top, out_h)
        c0, c1 = area_windows(right - left, out_w)
        counts = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).astype(np.float32)
        top, left = np.asarray(top)[:, None], np.asarray(left)[:, None]
        rows0, rows1 = ((r0 + top) * self.width)[:, :, None], ((r1 + top) * self.width)[:, :, None]
        cols0, cols1 = (c0 + left)[:, None, :], (c1 + left)[:, None, :]
        sums = np.take(self.flat, rows1 + cols1, axis=0)
        sums -= np.take(self.flat, rows0 + cols1, axis=0)
        sums -= np.take(self.flat, rows1 + cols0, axis=0)
        sums += np.take(self.flat, rows0 + cols0, axis=0)
        return sums.astype(np.float32) / counts[..., None]


def _nchw(pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) float32 pixels -> the networks' (N, 3, H, W) input, normalised, in channels-last memory
    (max pooling and the small convolutions run several times faster in it on a CPU)."""
    return _normalise(torch.from_numpy(pixels)).permute(0, 3, 1, 2)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


class MTCNNDetector:
    """The MTCNN cascade over `MTCNNNets`. ``detect(image)`` as in `cdface.detect.FaceDetector`."""

    name = "mtcnn"

    def __init__(self, nets: MTCNNNets | None = None, config: MTCNNConfig | None = None) -> None:
        if nets is None:
            from cdface.detect.mtcnn_weights import load_mtcnn_weights

            nets = MTCNNNets(load_mtcnn_weights())
        self.nets = nets
        self.config = config or MTCNNConfig()

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """(H, W, 3) uint8 RGB -> faces sorted by score (highest first); [] when there is none."""
        boxes, scores, points = self.detect_arrays(image)
        order = np.argsort(-scores, kind="stable")
        return [DetectedFace(box=boxes[i], score=float(scores[i]), landmarks=points[i]) for i in order]

    @torch.inference_mode()
    def detect_arrays(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cascade's raw output: boxes (K, 4) float32, scores (K,) float32, landmarks (K, 5, 2) float32,
        in the order of the last NMS."""
        image = check_image(image)
        h, w = image.shape[:2]
        empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))
        area = SummedArea(image)
        boxes = self._proposals(area, h, w)
        if len(boxes) == 0:
            return empty
        boxes = self._refine(area, boxes, w, h)
        if len(boxes) == 0:
            return empty
        return self._output(area, boxes, w, h)

    def _proposals(self, area: SummedArea, h: int, w: int) -> np.ndarray:
        """Stage 1: P-Net over the pyramid -> squared candidate boxes (N, 4) float32."""
        cfg = self.config
        found: list[np.ndarray] = []
        whole = [np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([h]), np.array([w])]
        for scale in pyramid_scales(h, w, cfg.min_face_size, cfg.factor):
            level = area.resample(*whole, int(h * scale + 1), int(w * scale + 1))
            prob, offsets = self.nets.pnet(_nchw(level))
            prob, offsets = prob[0].numpy(), offsets[0].numpy()
            ys, xs = np.nonzero(prob >= cfg.thresholds[0])
            if ys.size == 0:
                continue
            cells = np.stack([xs, ys], axis=1).astype(np.float32) * np.float32(2)
            s = np.float32(scale)
            rows = np.concatenate([np.floor((cells + np.float32(1)) / s), np.floor((cells + np.float32(12)) / s),
                                   prob[ys, xs][:, None], offsets[:, ys, xs].T], axis=1)
            found.append(rows[nms(rows[:, :4], rows[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 4), np.float32)
        rows = np.concatenate(found)
        rows = rows[nms(rows[:, :4], rows[:, 4], 0.7)]
        return square_boxes(regress_boxes(rows[:, :4], rows[:, 5:9], pixel_offset=0.0))

    @staticmethod
    def _crops(area: SummedArea, boxes: np.ndarray, w: int, h: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
        """Normalised (N', 3, size, size) crops of the boxes clipped to the photo (truncated to whole pixels
        as the reference does), and the mask of the boxes that still cover a pixel."""
        cells = np.trunc(boxes).astype(np.int64)
        left, top = np.maximum(cells[:, 0], 1) - 1, np.maximum(cells[:, 1], 1) - 1
        right, bottom = np.minimum(cells[:, 2], w), np.minimum(cells[:, 3], h)
        valid = (right > left) & (bottom > top)
        crops = area.resample(top[valid], left[valid], bottom[valid], right[valid], size, size)
        return _nchw(crops), valid

    def _refine(self, area: SummedArea, boxes: np.ndarray, w: int, h: int) -> np.ndarray:
        """Stage 2: R-Net on 24x24 crops -> squared, regressed boxes (N, 4) float32."""
        crops, valid = self._crops(area, boxes, w, h, 24)
        boxes = boxes[valid]
        prob, offsets = (t.numpy() for t in self.nets.rnet(crops))
        keep = prob > self.config.thresholds[1]
        boxes, prob, offsets = boxes[keep], prob[keep], offsets[keep]
        pick = nms(boxes, prob, 0.7)
        return square_boxes(regress_boxes(boxes[pick], offsets[pick], pixel_offset=1.0))

    def _output(self, area: SummedArea, boxes: np.ndarray, w: int, h: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: O-Net on 48x48 crops -> final boxes, scores and landmarks."""
        crops, valid = self._crops(area, boxes, w, h, 48)
        boxes = boxes[valid]
        prob, offsets, marks = (t.numpy() for t in self.nets.onet(crops))
        keep = prob > self.config.thresholds[2]
        boxes, prob, offsets, marks = boxes[keep], prob[keep], offsets[keep], marks[keep]
        one = np.float32(1)
        size = boxes[:, 2:4] - boxes[:, 0:2] + one  # (N, 2): inclusive pixel width, height
        xs = size[:, 0:1] * marks[:, 0:5] + boxes[:, 0:1] - one
        ys = size[:, 1:2] * marks[:, 5:10] + boxes[:, 1:2] - one
        points = np.stack([xs, ys], axis=2)
        boxes = regress_boxes(boxes, offsets, pixel_offset=1.0)
        pick = nms(boxes, prob, 0.7, overlap="min", pixel_offset=1.0)
        return boxes[pick], prob[pick], points[pick]
