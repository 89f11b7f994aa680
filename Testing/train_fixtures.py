"""Small synthetic CT/label volumes for the training tests (and the torchrun script they launch)."""

from __future__ import annotations

import numpy as np

from MAISIEngine.train.data import ListSource, TrainingVolume, hu_to_unit

BLOCK_HU = {200: 0.0, 1: 60.0, 3: 45.0, 33: 500.0, 26: 20.0}
"""Nominal HU of the blocks: body, liver, spleen, vertebra, hepatic tumor."""


def block_volume(seed: int, shape=(32, 32, 32), tumor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels (body, liver, spleen, vertebra, optional liver tumor) and a matching noisy CT in HU."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    shift = int(rng.integers(-2, 3))
    labels[2:30, 3:29, :] = 200
    labels[5 + shift : 17 + shift, 6:18, 4:28] = 1
    labels[19:27, 6 + shift : 16 + shift, 4:18] = 3
    labels[14:18, 22:26, 2:30] = 33
    if tumor:
        labels[9 + shift : 12 + shift, 10:13, 12:15] = 26
    hu = np.full(shape, -1000.0, np.float32)
    for label_id, value in BLOCK_HU.items():
        hu[labels == label_id] = value
    hu += rng.normal(0.0, 8.0, shape).astype(np.float32)
    return labels, hu


def block_source(count: int = 3) -> ListSource:
    """`count` volumes at 4 mm, the first with a liver tumor."""
    volumes = []
    for index in range(count):
        labels, hu = block_volume(index, tumor=index == 0)
        volumes.append(TrainingVolume(hu_to_unit(hu), labels, (4.0, 4.0, 4.0), f"block{index}"))
    return ListSource(volumes)
