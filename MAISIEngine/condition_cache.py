"""Compute a ControlNet's condition embedding once per sampled volume instead of once per step.

MONAI's ControlNet runs its condition embedding (a stack of strided convolutions over the full-resolution
mask bit-planes) inside every forward, although it depends on the mask alone: neither the noisy latent
nor the timestep enters it. With the demo model on a 2-core CPU that embedding was half of a 128^3
generation (7.5 of 14.4 s over 20 steps); on a GPU it is a full-resolution pass per step and per guidance
branch. While `embedding_computed_once` is active, the ControlNet gets the embedding it computed first
for the same condition tensor, so every step is bit-identical to the uncached one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

EMBEDDING_ATTRIBUTE = "controlnet_cond_embedding"
"""MONAI's ControlNet (and ControlNetMaisi) submodule that turns the condition into the first feature map."""


class CachedConditionEmbedding(torch.nn.Module):
    """Stands in for the embedding: returns the stored result for the condition tensors it was built for
    (the conditional and, with guidance, the unconditional one; compared by identity, so any other
    condition is computed afresh)."""

    def __init__(self, embedding: torch.nn.Module, stored: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.embedding = embedding
        self.stored = stored

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        for known, value in self.stored:
            if condition is known:
                return value
        return self.embedding(condition)


@contextmanager
def embedding_computed_once(controlnet: torch.nn.Module | None, *conditions: torch.Tensor | None) -> Iterator[None]:
    """Within the block, `controlnet(..., controlnet_cond=c)` reuses one embedding of each given `c`.

    Call it inside the autocast context the steps run under, so the stored embedding has the dtype every
    step would have computed. Only for inference (no gradients reach the embedding through the cache).
    """
    embedding = getattr(controlnet, EMBEDDING_ATTRIBUTE, None) if controlnet is not None else None
    present = [c for c in conditions if c is not None]
    if embedding is None or not present or isinstance(embedding, CachedConditionEmbedding):
        yield
        return
    with torch.no_grad():
        stored = [(c, embedding(c)) for c in present]
    setattr(controlnet, EMBEDDING_ATTRIBUTE, CachedConditionEmbedding(embedding, stored))
    try:
        yield
    finally:
        setattr(controlnet, EMBEDDING_ATTRIBUTE, embedding)
