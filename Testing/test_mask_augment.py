"""Database mask augmentation as the reference does it: tumors move inside their host, else a slight zoom."""

from __future__ import annotations

import numpy as np

from MAISIEngine.masktools.augment import augment_retrieved_mask, augment_tumor


def liver_with_tumor() -> np.ndarray:
    v = np.zeros((64, 64, 48), dtype=np.uint8)
    v[4:60, 4:60, 4:44] = 200
    v[12:52, 12:52, 8:40] = 1
    v[20:28, 20:28, 16:24] = 26
    return v


def test_liver_tumor_moves_inside_the_liver_keeping_most_of_its_volume():
    v = liver_with_tumor()
    out, done = augment_retrieved_mask(v, seed=3)
    assert done == "liver tumor moved"
    tumor = out == 26
    assert tumor.sum() >= 0.8 * 512
    assert not np.array_equal(tumor, v == 26)
    assert np.array_equal(np.isin(out, (1, 26)), np.isin(v, (1, 26)))  # only inside the liver
    assert np.array_equal(out == 200, v == 200)
    again, _ = augment_retrieved_mask(v, seed=3)
    other, _ = augment_retrieved_mask(v, seed=4)
    assert np.array_equal(out, again) and not np.array_equal(out, other)


def test_pancreatic_tumor_stays_in_the_pancreas_and_bone_lesion_in_bone():
    v = np.zeros((48, 48, 40), dtype=np.uint8)
    v[2:46, 2:46, 2:38] = 200
    v[10:38, 10:20, 10:30] = 4
    v[14:20, 12:18, 16:22] = 24
    out = augment_tumor(v, "pancreas", seed=1)
    assert np.array_equal(np.isin(out, (4, 24)), np.isin(v, (4, 24))) and (out == 24).sum() >= 0.8 * 216
    b = np.zeros((48, 48, 40), dtype=np.uint8)
    b[2:46, 2:46, 2:38] = 200
    b[16:32, 16:32, 4:36] = 35  # a vertebra
    b[20:26, 20:26, 12:18] = 128
    out = augment_tumor(b, "bone", seed=2)
    assert (out == 128).sum() >= 0.8 * 216
    assert np.isin(out[out == 128 * 1], (128,)).all() and (np.isin(out, (35, 128)) <= np.isin(b, (35, 128))).all()


def test_a_map_without_tumor_is_zoomed_slightly_keeping_its_size_and_labels():
    v = liver_with_tumor()
    v[v == 26] = 1
    out, done = augment_retrieved_mask(v, seed=5)
    assert done == "body zoomed" and out.shape == v.shape and out.dtype == v.dtype
    assert set(np.unique(out)) == {0, 1, 200}
    assert abs(int((out == 1).sum()) - int((v == 1).sum())) <= 0.04 * (v == 1).sum()
