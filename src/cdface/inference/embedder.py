"""FaceEmbedder: aligned face crops in, L2-normalised flip-fused embeddings out.

Flip fusion is the field's standard test-time augmentation (insightface, the paper's repo): the embedding of
the image plus the embedding of its horizontal mirror, then L2-normalised. The colour order of the caller's
images is an explicit argument, never a guess.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cdface.data.align import fit_to_size
from cdface.embedding import flip_embed, l2_normalize
from cdface.inference.loading import EmbeddingModel, _writable, load_embedding_model

__all__ = ["FaceEmbedder", "compare", "read_image_file"]

ImagesLike = np.ndarray | Tensor | Sequence[np.ndarray | Tensor | str | os.PathLike]


def compare(a: np.ndarray | Tensor | Sequence[float], b: np.ndarray | Tensor | Sequence[float]) -> float:
    """Cosine similarity of two embeddings (1-D vectors; normalised here, so raw features work too)."""
    va = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64).ravel()
    vb = np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"embeddings differ in size: {va.shape[0]} vs {vb.shape[0]}")
    denom = np.linalg.norm(va) * np.linalg.norm(vb)
    return float(va @ vb / denom) if denom > 0 else 0.0


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file into HWC uint8 RGB (cdface.data.decode handles JPEG/PNG/...)."""
    from cdface.data.decode import decode_image

    with open(path, "rb") as handle:
        data = handle.read()
    return decode_image(data)


class FaceEmbedder:
    """Embed aligned faces with any model `load_embedding_model` understands.

    Args:
        model_or_path: nn.Module, EmbeddingModel, or a path (checkpoint, state_dict, run dir, ONNX).
        device: None picks the GPU when present.
        precision: "fp32", "bf16" or "fp16" (autocast).
        batch_size: images per forward pass (each image also sends its mirror when `flip`).
        flip: flip fusion on/off.
        **load_kwargs: passed to `load_embedding_model` (arch, input_mean, input_std, bgr, embedding_size).
    """

    def __init__(
        self,
        model_or_path: str | os.PathLike | nn.Module | EmbeddingModel,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        batch_size: int = 64,
        flip: bool = True,
        **load_kwargs: Any,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = load_embedding_model(model_or_path, device=device, precision=precision, **load_kwargs)
        self.batch_size = int(batch_size)
        self.flip = bool(flip)

    @property
    def input_cfg(self) -> dict[str, Any]:
        return self.model.input_cfg

    def embed(self, images: ImagesLike, color: str = "RGB", normalize: bool = True) -> np.ndarray:
        """Embeddings (N, D) float32 of aligned uint8 face crops.

        `images`: one HWC array, an NHWC array/tensor, a list of arrays/tensors, or a list of file paths.
        `color`: the channel order of the arrays given ("RGB" or "BGR"; files are always decoded to RGB).
        `normalize=False` returns the raw flip-fused sum (IJB's template pooling weights images by its norm).
        """
        from cdface.inference.input_check import check_input_sizes

        color = color.upper()
        if color not in ("RGB", "BGR"):
            raise ValueError(f"color must be 'RGB' or 'BGR', got {color!r}")
        sizes: Counter[tuple[int, int]] = Counter()
        outs = [self.embed_batch(batch) for batch in self._rgb_batches(images, color, sizes)]
        check_input_sizes(sizes, self.input_cfg["input_size"], "FaceEmbedder.embed",
                          hint="pass aligned crops, or align photos first with FaceEmbedder.align(image, landmarks5)")
        if not outs:
            return np.zeros((0, self.model.embedding_size or 0), dtype=np.float32)
        feats = np.concatenate(outs)
        return l2_normalize(feats) if normalize else feats

    def embed_batch(self, batch: np.ndarray | Tensor) -> np.ndarray:
        """Flip-fused, un-normalised embeddings of one uint8 RGB (N,H,W,3) batch."""
        plain, flipped = self.embed_pair(batch)
        return plain if flipped is None else plain + flipped

    def embed_pair(self, batch: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(embeddings, embeddings of the mirrored images or None without flip), un-normalised float32.

        One forward pass carries both halves (`cdface.embedding.flip_embed`); the evaluator fuses them as
        each protocol's reference does.
        """
        x = torch.from_numpy(_writable(batch)) if isinstance(batch, np.ndarray) else torch.as_tensor(batch)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
            x = x.permute(0, 2, 3, 1)  # NCHW uint8 -> NHWC
        if not self.flip:
            return self.model(x), None
        if len(x) == 0:
            empty = self.model(x)
            return empty, empty.copy()
        return flip_embed(self.model.forward_normalized, self.model.preprocess(x))

    def align(self, image: np.ndarray, landmarks5: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Warp a full image (HWC uint8) to the model's crop with the ArcFace 5-point template."""
        from cdface.data.align import align_face

        size = self.input_cfg["input_size"]
        return align_face(image, np.asarray(landmarks5, dtype=np.float32).reshape(5, 2), size=size[0])

    def _rgb_batches(
        self, images: ImagesLike, color: str, sizes: Counter[tuple[int, int]]
    ) -> Iterator[np.ndarray | Tensor]:
        """Batches of RGB uint8 images; arrays given in BGR are reordered, files decode to RGB already.
        `sizes` counts the (h, w) of the images as given (the model resizes other sizes)."""
        if isinstance(images, (np.ndarray, Tensor)):
            if images.ndim == 3:
                images = images[None]
            nchw = images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3
            hw = tuple(int(v) for v in (images.shape[2:4] if nchw else images.shape[1:3]))
            sizes[(hw[0], hw[1])] += len(images)
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                yield _channel_flip(batch) if color == "BGR" else batch
            return
        items = list(images)
        for start in range(0, len(items), self.batch_size):
            chunk = []
            for item in items[start : start + self.batch_size]:
                if isinstance(item, (str, os.PathLike, Path)):
                    chunk.append(read_image_file(item))
                else:
                    arr = _as_hwc_uint8(item)
                    chunk.append(arr[..., ::-1] if color == "BGR" else arr)
            sizes.update((int(image.shape[0]), int(image.shape[1])) for image in chunk)
            size = tuple(self.input_cfg["input_size"])
            yield np.stack([fit_to_size(image, size) for image in chunk])  # mixed sizes: resized as the model would


def _channel_flip(batch: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Reverse the channel axis of an NHWC (or NCHW uint8 tensor) batch."""
    channel_axis = 1 if batch.ndim == 4 and batch.shape[1] == 3 and batch.shape[-1] != 3 else -1
    if isinstance(batch, Tensor):
        return batch.flip(channel_axis)
    return np.flip(batch, axis=channel_axis)


def _as_hwc_uint8(image: np.ndarray | Tensor) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an HWC uint8 image with 3 channels, got shape {arr.shape} {arr.dtype}")
    return arr
