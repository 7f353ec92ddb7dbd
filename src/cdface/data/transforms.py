"""Train/eval image transforms: uint8 (H, W, 3) RGB -> (3, H, W) tensor, uint8 or float in [-1, 1].

The training pipeline takes uint8 out of its transform and normalises with the model's own input contract
(`cdface.models.input_contract.InputContract`); the float outputs here (`to_tensor`, `normalize_uint8`) are that
contract's project default (RGB, mean = std = 0.5), equal to it bit for bit.

Randomness comes only from the ``numpy.random.Generator`` passed in. Datasets build it with
``sample_rng(seed, epoch, index)``, so an augmentation is a pure function of (seed, epoch, sample index):
the same in any worker, after a resume, and with any number of workers.
"""

from __future__ import annotations

import numpy as np
import torch

from cdface.data.align import fit_to_size, resize_bilinear, warp_affine

__all__ = ["EvalTransform", "TrainTransform", "normalize_uint8", "sample_rng", "to_tensor"]


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A generator determined by (seed, epoch, index) alone."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index) & 0xFFFFFFFFFFFF])


def to_tensor(image: np.ndarray, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32, ``(x / 255 - mean) / std``."""
    chw = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1), dtype=np.float32)
    np.divide(chw, np.float32(255.0), out=chw)
    np.subtract(chw, np.float32(mean), out=chw)
    np.divide(chw, np.float32(std), out=chw)
    return torch.from_numpy(chw)


def normalize_uint8(images: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 ``(x / 255 - mean) / std``, bit-identical to ``to_tensor`` and to the default
    ``InputContract`` (which the trainer applies: the model's own mean/std/colour order)."""
    return images.float().div_(255.0).sub_(mean).div_(std)


class EvalTransform:
    """Resize to ``size`` if needed and normalise. No randomness."""

    def __init__(self, size: int = 112) -> None:
        self.size = size

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return to_tensor(fit_to_size(image, self.size))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


class TrainTransform:
    """The paper's augmentation (random horizontal flip) plus optional extras, all off by default.

    - ``random_resized_crop=(min_area, max_area)``: a square crop covering that fraction of the image at a
      random position, resized back (one bilinear warp).
    - ``color_jitter=j``: brightness, contrast and saturation factors drawn from [1 - j, 1 + j].
    - ``low_res_prob=p``: with probability p, downsample by a factor in [2, 4] and upsample back.
    - ``output="uint8"``: return the (3, H, W) uint8 tensor and let the consumer normalise it (the trainer
      does, on its device, with the model's ``InputContract``): a quarter of the bytes between DataLoader
      workers and the main process. ``"float32"`` normalises with the default contract (``to_tensor``).
    """

    def __init__(
        self,
        flip_p: float = 0.5,
        random_resized_crop: tuple[float, float] | None = None,
        color_jitter: float = 0.0,
        low_res_prob: float = 0.0,
        size: int = 112,
        output: str = "float32",
    ) -> None:
        if output not in ("float32", "uint8"):
            raise ValueError(f"output must be 'float32' or 'uint8', got {output!r}")
        if not 0.0 <= flip_p <= 1.0 or not 0.0 <= low_res_prob <= 1.0 or not 0.0 <= color_jitter < 1.0:
            raise ValueError("flip_p and low_res_prob must be in [0, 1], color_jitter in [0, 1)")
        if random_resized_crop is not None:
            lo, hi = random_resized_crop
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"random_resized_crop must be (min, max) with 0 < min <= max <= 1, got {lo, hi}")
        self.flip_p = flip_p
        self.random_resized_crop = random_resized_crop
        self.color_jitter = color_jitter
        self.low_res_prob = low_res_prob
        self.size = size
        self.output = output

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        image = fit_to_size(image, self.size)
        flip = rng.random() < self.flip_p
        if self.random_resized_crop is not None:
            image = self._crop(image, rng)
        if self.low_res_prob > 0 and rng.random() < self.low_res_prob:
            factor = rng.uniform(2.0, 4.0)
            small = max(8, int(round(self.size / factor)))
            image = resize_bilinear(resize_bilinear(image, small, small), self.size, self.size)
        if flip:
            image = image[:, ::-1]
        if self.color_jitter > 0:
            image = self._jitter(image, rng)
        if self.output == "uint8":
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return to_tensor(image)

    def _crop(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.random_resized_crop  # type: ignore[misc]
        side = self.size * np.sqrt(rng.uniform(lo, hi))
        x0, y0 = rng.uniform(0, self.size - side, size=2)
        scale = self.size / side
        matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
        return warp_affine(image, matrix, self.size, border="replicate")

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        brightness, contrast, saturation = rng.uniform(1 - self.color_jitter, 1 + self.color_jitter, size=3)
        x = image.astype(np.float32) * brightness
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - gray.mean()) * contrast + gray.mean()
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - gray[..., None]) * saturation + gray[..., None]
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(flip_p={self.flip_p}, random_resized_crop={self.random_resized_crop}, "
            f"color_jitter={self.color_jitter}, low_res_prob={self.low_res_prob}, size={self.size}, "
            f"output={self.output!r})"
        )
