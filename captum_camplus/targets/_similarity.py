"""An encoder's embedding as scores: its cosine similarity to reference embeddings."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from captum_camplus.targets._outputs import OutputKey, output_tensor


class SimilarityScores(nn.Module):
    r"""``(N, K)`` scores: the cosine similarity of the encoder's embedding to each reference.

    .. math::

        S_{n,k} = \frac{e_n \cdot r_k}{\lVert e_n \rVert\, \lVert r_k \rVert},

    with ``e_n`` the embedding of example ``n`` and ``r_k`` row ``k`` of ``references`` (e.g.
    text embeddings of class prompts, or the embedding of an image to compare with), so
    ``target=k`` explains "what makes the image look like reference ``k``". The encoder stays a
    submodule, so its layers are hooked as usual. An embedding of norm 0 scores 0.

    Args:
        encoder: Returns ``(N, D)`` embeddings, as a tensor or inside its output (read by
            ``key``).
        references: ``(K, D)`` reference embeddings, no row zero.
        key: The embedding in the encoder's output. ``None`` (default): a tensor output
            itself, else the first of ``image_embeds``, ``pooler_output`` and ``logits`` that
            the output has; else a dict key, field name or tuple position.

    Raises:
        ValueError: references that are not 2-D, not finite or have a zero row; at the
            forward, an embedding that is not ``(N, D)`` with the references' ``D``.
    """

    #: The scores are cosine similarities in [-1, 1]: the metrics take them as they are and
    #: refuse those that need positive scores (``metrics.confidence``, ``scores="cosine"``).
    scores_kind: ClassVar[str] = "cosine"
    references: Tensor

    def __init__(self, encoder: nn.Module, references: Tensor, key: OutputKey = None) -> None:
        super().__init__()
        if not isinstance(references, Tensor):
            references = torch.as_tensor(references)
        if references.dim() != 2:
            raise ValueError(
                f"references must be (K, D), one embedding per row, got shape "
                f"{tuple(references.shape)} (one reference: references[None])"
            )
        references = references.detach()
        if not references.is_floating_point():
            references = references.float()
        if not bool(references.isfinite().all()):
            raise ValueError("references contain NaN or inf values")
        norms = references.norm(dim=1)
        zero = (norms == 0).nonzero().flatten().tolist()
        if zero:
            raise ValueError(
                f"references row(s) {zero} are zero: the cosine similarity to them is undefined"
            )
        self.encoder = encoder
        self.key = key
        self.register_buffer("references", references / norms[:, None], persistent=False)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        output = self.encoder(*args, **kwargs)
        embedding = output_tensor(output, self.key, ("image_embeds", "pooler_output"))
        if embedding.dim() != 2 or embedding.shape[1] != self.references.shape[1]:
            raise ValueError(
                f"the encoder's embedding has shape {tuple(embedding.shape)}, but the "
                f"references need (N, {self.references.shape[1]}) embeddings"
            )
        direction = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return direction @ self.references.to(embedding).T


__all__ = ["SimilarityScores"]
