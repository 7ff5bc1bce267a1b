"""Measures of generated samples, shared by the generative families' tests.

- :func:`moons`: the standardized ``make_moons`` data the issue measures on.
- :func:`c2st_auc`: a classifier two-sample test: gradient boosting tells
  generated rows from held-out real rows; its shuffled 5-fold ROC AUC is
  0.5 when it cannot, 1.0 when the two sets are apart.
- :func:`mmd_test`: the maximum mean discrepancy with a Gaussian kernel
  (median-heuristic bandwidth) and its permutation p-value.
"""

import numpy as np
from sklearn.datasets import make_moons
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler


def moons(n_samples=2000, noise=0.05, random_state=0):
    """``make_moons(n_samples, noise)``, standardized: (train, held-out) halves."""
    X, _ = make_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    X = StandardScaler().fit_transform(X)
    half = n_samples // 2
    return X[:half], X[half:]


def c2st_auc(generated, real, random_state=0):
    """Classifier two-sample test: shuffled 5-fold ROC AUC of generated vs real.

    Parameters
    ----------
    generated, real : ndarray of shape (n, n_features)
        The same number of rows is best (500 and 500 in the issue).

    Returns
    -------
    float
        Mean ROC AUC; 0.5: indistinguishable.
    """
    generated = np.asarray(generated, dtype=np.float64).reshape(len(generated), -1)
    real = np.asarray(real, dtype=np.float64).reshape(len(real), -1)
    X = np.vstack([generated, real])
    y = np.r_[np.ones(len(generated)), np.zeros(len(real))]
    folds = StratifiedKFold(5, shuffle=True, random_state=random_state)
    classifier = HistGradientBoostingClassifier(max_iter=100, random_state=random_state)
    return float(cross_val_score(classifier, X, y, cv=folds, scoring="roc_auc").mean())


def _squared_distances(A, B):
    return (np.sum(A**2, 1)[:, None] + np.sum(B**2, 1)[None, :] - 2 * A @ B.T).clip(0)


def mmd_test(X, Y, n_permutations=200, random_state=0):
    """Unbiased MMD^2 between samples X and Y, and its permutation p-value.

    Gaussian kernel, bandwidth: the median pairwise distance of the pooled
    sample. The p-value is the fraction of random relabelings of the pooled
    sample whose MMD^2 is at least the observed one (with the usual +1).

    Returns
    -------
    mmd2 : float
    p_value : float
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    Z = np.vstack([X, Y])
    D = _squared_distances(Z, Z)
    bandwidth2 = np.median(D[np.triu_indices_from(D, k=1)])
    K = np.exp(-D / bandwidth2)
    n, m = len(X), len(Y)

    def statistic(order):
        a, b = order[:n], order[n:]
        Kaa, Kbb, Kab = K[np.ix_(a, a)], K[np.ix_(b, b)], K[np.ix_(a, b)]
        return ((Kaa.sum() - np.trace(Kaa)) / (n * (n - 1))
                + (Kbb.sum() - np.trace(Kbb)) / (m * (m - 1)) - 2 * Kab.mean())

    rng = np.random.default_rng(random_state)
    observed = statistic(np.arange(n + m))
    null = [statistic(rng.permutation(n + m)) for _ in range(n_permutations)]
    p_value = (1 + np.sum(np.asarray(null) >= observed)) / (1 + n_permutations)
    return float(observed), float(p_value)
