"""The Fréchet distance between two sets of feature vectors (the "FID" once the features are Inception's
or, here, RadImageNet's):

    d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b)

MONAI's `FIDMetric` computes tr sqrt(S_a S_b) with a dense matrix square root, which is sound when both
sets have more vectors than features. With fewer (a few hundred slices against 2048 features, the common
case for a handful of CTs) both covariances are singular and the dense root loses digits. Then the trace
is taken exactly from the centred data: with A = (X_a - mu_a)/sqrt(n_a - 1) and B likewise, the non-zero
eigenvalues of S_a S_b = A'A B'B are those of (A B')(A B')', so tr sqrt(S_a S_b) is the sum of the
singular values of the small n_a x n_b matrix A B'.
"""

from __future__ import annotations

import torch

from MAISIEngine.errors import MaisiError


def _checked(features: torch.Tensor, what: str) -> torch.Tensor:
    features = torch.as_tensor(features).detach().cpu().double()
    if features.ndim != 2:
        raise MaisiError(f"{what} features have shape {tuple(features.shape)}, (vectors, features) expected")
    if features.shape[0] < 2:
        raise MaisiError(f"{what} set gives {features.shape[0]} feature vector(s); the distance needs at least 2",
                         "give more images or more slices")
    if not torch.isfinite(features).all():
        raise MaisiError(f"{what} features hold NaN or infinite values", "check the images and the feature weights")
    return features


def frechet_distance(a: torch.Tensor, b: torch.Tensor, method: str = "auto") -> float:
    """d^2 between the Gaussians fitted to feature sets `a` (n_a, d) and `b` (n_b, d), in float64.

    method: "monai" (MONAI's FIDMetric), "exact" (the singular-value form above), or "auto": MONAI's
    when both sets have more vectors than features, the exact form otherwise.
    """
    a, b = _checked(a, "first"), _checked(b, "second")
    if a.shape[1] != b.shape[1]:
        raise MaisiError(f"feature sizes differ ({a.shape[1]} and {b.shape[1]})", "use one feature network for both sets")
    if method == "auto":
        method = "monai" if min(a.shape[0], b.shape[0]) > a.shape[1] else "exact"
    if method == "monai":
        from monai.metrics import FIDMetric

        return float(FIDMetric()(a, b))
    if method != "exact":
        raise ValueError(f"unknown method {method!r}")
    centred_a = (a - a.mean(0)) / (a.shape[0] - 1) ** 0.5
    centred_b = (b - b.mean(0)) / (b.shape[0] - 1) ** 0.5
    cross = torch.linalg.svdvals(centred_a @ centred_b.T).sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    value = mean_term + centred_a.square().sum() + centred_b.square().sum() - 2 * cross
    return float(value)
