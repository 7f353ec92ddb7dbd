"""Periodic verification during training: a `.bin` pair set decoded once, embedded with flip fusion."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cdface.embedding import flip_embed
from cdface.eval.verification import PairResult, count_nonfinite_rows, evaluate_pairs
from cdface.models.input_contract import DEFAULT_INPUT_CFG, InputContract

logger = logging.getLogger("cdface.train")


@dataclass
class PairImages:
    images: np.ndarray  # (2N, H, W, 3) uint8 RGB
    issame: np.ndarray  # (N,) bool
    source: str = ""  # the .bin it came from


def load_pair_images(path: str, max_pixels: int | None = None) -> PairImages:
    """Decode a `.bin` whole at the size of its first image (a stray image of another size is resized to it);
    an undecodable or over-the-cap image (`max_pixels`) is a FormatError naming it."""
    from cdface.data.decode import decode_image
    from cdface.data.pairs_bin import decode_pairs, load_bin

    pair_set = load_bin(path)
    first = decode_image(pair_set.images[0], path, "image 0", max_pixels) if pair_set.images else None
    size = first.shape[:2] if first is not None else DEFAULT_INPUT_CFG["input_size"]
    images = decode_pairs(pair_set, size=(int(size[0]), int(size[1])), max_pixels=max_pixels)
    return PairImages(images=images, issame=np.asarray(pair_set.issame, dtype=bool), source=str(path))


def model_input(images: np.ndarray, device: torch.device, contract: InputContract) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> the model's float input (N, 3, H, W) on ``device``, by its input contract."""
    return contract(torch.from_numpy(images).to(device).permute(0, 3, 1, 2))


@torch.no_grad()
def embed_with_flip(
    backbone: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, embeddings of the horizontally flipped images), as insightface's test() computes them."""
    plain, flipped = [], []
    contract = InputContract.from_model(backbone)  # the preprocessing the training loop applies
    for start in range(0, len(images), batch_size):
        x = model_input(images[start : start + batch_size], device, contract)
        a, b = flip_embed(backbone, x)  # one pass over [x; mirrored x]
        plain.append(a.float().cpu())
        flipped.append(b.float().cpu())
    return torch.cat(plain).numpy(), torch.cat(flipped).numpy()


def verify_pair_set(
    backbone: nn.Module, pairs: PairImages, device: torch.device, batch_size: int = 256, name: str = "pairs"
) -> PairResult:
    """insightface's verification of the backbone on one pair set.

    Non-finite embeddings (a diverged backbone) are counted and logged as a warning, and the returned
    accuracy and TAR are NaN: a diverged model must not read as 50% accuracy in the metrics log.
    """
    was_training = backbone.training
    backbone.eval()
    emb, emb_flip = embed_with_flip(backbone, pairs.images, device, batch_size)
    backbone.train(was_training)
    result = evaluate_pairs(emb + emb_flip, pairs.issame)
    if result.valid:
        return result
    bad = count_nonfinite_rows(emb, emb_flip)
    logger.warning(
        "verification on %s: %d of %d embeddings are non-finite (NaN/inf); the result is invalid (logged as NaN)",
        name, bad, 2 * len(emb),
    )
    nan = float("nan")
    return dataclasses.replace(result, accuracy=nan, accuracy_std=nan, val=nan, val_std=nan)
