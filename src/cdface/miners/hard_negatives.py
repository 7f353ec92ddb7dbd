"""Pick the negative class centres that the CD loss pushes hard samples away from.

As the paper's repository: for each selected class y, one batch row of class y (the last occurrence, as
the reference's label -> row dict keeps it) ranks all classes by cosine with its target column
excluded; its top NP classes are y's hard negatives. The shared pool is the union of the K sets minus
the K selected classes. With ``per_class`` each class keeps its own (K, NP) list, excluding only its own
class (another selected class is a legitimate negative for y; in the shared pool the selected classes
must go because every hard sample is pushed from every pooled centre, its own included).
"""

from __future__ import annotations

import torch
from torch import Tensor


def hard_negative_centres(
    cosine: Tensor,
    labels: Tensor,
    classes: Tensor,
    num_negatives: int = 500,
    per_class: bool = False,
) -> Tensor:
    """Class ids of hard negatives: sorted unique (P,) LongTensor, or (K, NP) with ``per_class``.

    ``cosine`` (B, C) batch-vs-class cosines, ``labels`` (B,), ``classes`` (K,) selected class ids, each
    present in ``labels``. NP is clamped to C - 1.
    """
    cosine = cosine.detach()
    labels = labels.to(cosine.device).long()
    classes = torch.as_tensor(classes, device=cosine.device).long().reshape(-1)
    num_classes = cosine.shape[1]
    rows = _last_row_of_each_class(labels, classes)
    picked = cosine.index_select(0, rows).clone()  # (K, C)
    picked.scatter_(1, classes.unsqueeze(1), float("-inf"))
    k = max(0, min(num_negatives, num_classes - 1))
    top = picked.topk(k, dim=1).indices  # (K, NP)
    if per_class:
        return top
    excluded = torch.zeros(num_classes, dtype=torch.bool, device=cosine.device)
    excluded[classes] = True
    chosen = torch.zeros(num_classes, dtype=torch.bool, device=cosine.device)
    chosen[top.reshape(-1)] = True
    return torch.nonzero(chosen & ~excluded).reshape(-1)


def _last_row_of_each_class(labels: Tensor, classes: Tensor) -> Tensor:
    matches = labels.unsqueeze(0) == classes.unsqueeze(1)  # (K, B)
    if not bool(matches.any(dim=1).all()):
        missing = classes[~matches.any(dim=1)].tolist()
        raise ValueError(f"selected classes {missing} have no row in the batch")
    positions = torch.arange(labels.shape[0], device=labels.device)
    return torch.where(matches, positions, -1).amax(dim=1)
