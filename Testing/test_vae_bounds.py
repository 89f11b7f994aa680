"""The ideal linear codec that `bench/vae_bounds.py` measures the demo VAE against keeps exactly the band it
claims: what lies inside the band passes unchanged, what lies outside is gone, and of a 128^3 volume it keeps
51^3 coefficients, 6.3 %: the whole frequencies nearest MAISI's compression of 1/16."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from vae_bounds import ideal_linear_codec


def cosine(shape: tuple[int, int, int], cycles: tuple[int, int, int]) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij")
    return np.cos(2 * np.pi * sum(c * g for c, g in zip(cycles, grids)))


def test_frequencies_inside_the_band_pass_and_those_outside_are_dropped() -> None:
    shape = (64, 64, 48)
    inside = 0.5 + 0.2 * cosine(shape, (12, 3, 9))  # band edge at 1/16: 0.397 x Nyquist = 12.7, 12.7, 9.5 cycles
    outside = 0.05 * cosine(shape, (14, 0, 0))
    np.testing.assert_allclose(ideal_linear_codec((inside + outside).astype(np.float32), 1 / 16), inside, atol=1e-5)
    np.testing.assert_allclose(ideal_linear_codec(outside.astype(np.float32) + 0.5, 1 / 16), 0.5, atol=1e-6)


def test_it_keeps_one_sixteenth_of_a_128_cubed_volume() -> None:
    impulse = np.full((128, 128, 128), 0.5, np.float32)  # every Fourier coefficient of an impulse is non-zero
    impulse[0, 0, 0] += 0.4
    spectrum = np.fft.fftn(ideal_linear_codec(impulse, 1 / 16).astype(np.float64) - 0.5)
    fraction = np.mean(np.abs(spectrum) > 0.2)  # kept ones are 0.4, dropped ones 0 up to float32 rounding
    assert fraction == 51 ** 3 / 128 ** 3  # |f| <= 0.198 cycles/voxel: 25 + 1 + 25 frequencies per axis
    assert 1 / 16 < fraction < 0.064  # the whole frequencies nearest the band edge: 1.2 % more than 1/16
