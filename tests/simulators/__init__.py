r"""Two-sample checks shared by the simulator tests.

Both are cheap enough to run on 2 CPU cores in a fraction of a second for a few thousand
samples, and both look at the joint distribution, not only at the marginals.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from torch import Tensor

__all__ = ["knn_c2st", "same_distribution", "sliced_ks_min_pvalue"]


def _standardise(x: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    x, y = x.double().numpy(), y.double().numpy()
    pooled = np.concatenate([x, y])
    mu, sd = pooled.mean(0), pooled.std(0)
    sd[sd == 0] = 1.0
    return (x - mu) / sd, (y - mu) / sd


def sliced_ks_min_pvalue(x: Tensor, y: Tensor, num_projections: int = 20) -> tuple[float, int]:
    r"""Two-sample KS tests on every marginal and on fixed random 1-D projections.

    The projections (of the pooled-standardised data) see dependence that marginals miss,
    e.g. the sign of a correlation.

    Returns:
        The smallest p-value and the number of tests, for a Bonferroni correction.
    """
    xs, ys = _standardise(x, y)
    dirs = np.random.default_rng(0).normal(size=(xs.shape[1], num_projections))
    dirs /= np.linalg.norm(dirs, axis=0)
    xs, ys = np.concatenate([xs, xs @ dirs], 1), np.concatenate([ys, ys @ dirs], 1)
    pvalues = [ks_2samp(xs[:, j], ys[:, j], method="asymp").pvalue for j in range(xs.shape[1])]
    return float(min(pvalues)), len(pvalues)


def knn_c2st(x: Tensor, y: Tensor, k: int = 25, folds: int = 5) -> float:
    r"""Classifier two-sample test accuracy with a k-nearest-neighbour classifier.

    0.5 means the classifier cannot tell the samples apart. A kNN classifier is used instead
    of sbi's random forest / MLP because it takes milliseconds here.
    """
    xs, ys = _standardise(x, y)
    data = np.concatenate([xs, ys])
    labels = np.r_[np.zeros(len(xs)), np.ones(len(ys))]
    perm = np.random.default_rng(0).permutation(len(data))
    clf = KNeighborsClassifier(n_neighbors=k)
    return float(cross_val_score(clf, data[perm], labels[perm], cv=folds).mean())


def same_distribution(x: Tensor, y: Tensor, alpha: float = 1e-3, c2st_max: float = 0.56) -> bool:
    r"""Whether ``x`` and ``y`` pass both checks (Bonferroni-corrected KS, kNN C2ST)."""
    p, num_tests = sliced_ks_min_pvalue(x, y)
    return p > alpha / num_tests and knn_c2st(x, y) < c2st_max
