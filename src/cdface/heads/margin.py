"""The interface every margin implements, so heads (plain or sharded) can use any of them."""

from __future__ import annotations

from torch import Tensor, nn


class Margin(nn.Module):
    """Turns raw cosines into scaled logits with a margin on each row's target column.

    ``forward(cosine (B, C), labels (B,), norms (B, 1) | None) -> logits (B, C)``. Rows whose label
    is -1 get no margin. ``needs_norms`` says whether the embedding norms must be passed (AdaFace,
    MagFace); ``aux_loss(norms)`` returns an already-weighted regulariser, or None.
    """

    needs_norms: bool = False

    def forward(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def aux_loss(self, norms: Tensor | None) -> Tensor | None:
        return None

    def _require_norms(self, norms: Tensor | None, batch: int) -> Tensor:
        if norms is None:
            raise ValueError(f"{type(self).__name__} needs the embedding norms (B, 1)")
        return norms.reshape(batch)
