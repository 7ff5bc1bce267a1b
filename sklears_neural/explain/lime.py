"""LIME: a weighted linear surrogate of any model around each explained sample."""

from numbers import Integral, Real

import numpy as np
from sklearn.linear_model import lars_path
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array

from sklears_neural.explain._base import (
    Explainer,
    Progress,
    batch_rows,
    parallel_map,
    seed_sequence,
)
from sklears_neural.explain._explanation import Explanation
from sklears_neural.explain._model import PredictFunction, resolve_targets

__all__ = ["LimeExplainer"]

FEATURE_SELECTION = ("auto", "forward_selection", "highest_weights", "lasso_path",
                     "none")


class LimeExplainer(Explainer):
    """LIME for tabular data: a local linear surrogate of any fitted estimator.

    For each explained sample ``x`` (Ribeiro et al., 2016), ``num_samples``
    perturbed samples are drawn around it, ``x'_i = x + sigma * e_i`` with
    ``e_i ~ N(0, I)`` and ``sigma`` the training data's standard deviation
    per feature (the first one is ``x`` itself); the model is evaluated on
    them, and a ridge regression (``alpha=1``, with intercept) is fitted on
    the standardized perturbations ``z_i = (x'_i - mu) / sigma``, weighted
    by an exponential kernel of their distance to ``x``:

    .. math::

        \\pi_i = \\sqrt{\\exp(-d_i^2 / w^2)}, \\qquad
        d_i = \\lVert z_i - z_0 \\rVert_2, \\qquad
        \\min_{\\beta, b} \\sum_i \\pi_i (f(x'_i) - b - \\beta^\\top z_i)^2
            + \\lVert \\beta \\rVert^2

    on the ``num_features`` features chosen by ``feature_selection``.
    ``values`` are the coefficients ``beta``: the change of the explained
    output per standard deviation of each feature near ``x``, 0 for the
    features left out. The surrogate's weighted ``R^2`` (``local_r2``) says
    how far to trust it. This is ``lime.lime_tabular.LimeTabularExplainer``
    with ``discretize_continuous=False, sample_around_instance=True``.

    Explains ``output``: a classifier's ``predict_proba`` column of the
    target (by default its predicted class), its decision function with
    ``output="logit"``; a regressor's prediction. Works on any estimator or
    :class:`~sklearn.pipeline.Pipeline` (in the space of the pipeline's
    input), our torch estimators included; images and 3-D sequences are
    perturbed value by value.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
    training_data : array-like or None, default=None
        Samples in the layout the estimator takes whose mean and standard
        deviation per feature set the perturbation scale and the
        standardization (a feature of zero deviation gets 1). None: those of
        the explained ``X``, which then needs two samples or more.
    kernel_width : float or None, default=None
        ``w`` above; None is lime's ``0.75 * sqrt(n_features)``.
    num_samples : int, default=5000
        Perturbed samples per explained sample, the first being the sample.
    num_features : int or None, default=10
        Features kept in the surrogate (top-k); None keeps all.
    feature_selection : {"auto", "forward_selection", "highest_weights", \
"lasso_path", "none"}, default="auto"
        How the ``num_features`` are chosen (lime's names): ``"forward_selection"``
        adds, one at a time, the feature that most raises the weighted
        ``R^2`` of an unregularized fit; ``"highest_weights"`` keeps the
        largest ``|beta_j|`` of a ridge fit (``alpha=0.01``) on every feature
        (lime ranks by ``|beta_j z_0j|``, which for its default binary
        discretized features is the same); ``"lasso_path"`` keeps the last
        set of at most ``num_features`` features on the weighted lasso path;
        ``"none"`` keeps every feature; ``"auto"``: forward selection for
        ``num_features <= 6``, highest weights above.
    random_state : None, int or RandomState, default=None
        Seeds the perturbations: the explained sample at each position of
        ``X`` gets its own stream, so values do not depend on ``n_jobs`` or
        ``batch_size``.
    output : {"auto", "probability", "logit"}, default="auto"
    batch_size : int or "auto", default="auto"
        Perturbed rows per model call; ``"auto"`` keeps a call near 2**20
        input values (at most 4,096 rows).
    verbose : int, default=0
        Draw a progress bar over the explained samples on stderr.
    n_jobs : int or None, default=None
        Threads explaining samples in parallel (the model must be safe to
        call from threads; ours and scikit-learn's are). None: one.

    See Also
    --------
    KernelShapExplainer : Shapley values, additive by construction.

    Notes
    -----
    Cost: ``n_samples * num_samples`` model evaluations in calls of
    ``batch_size`` rows (samples share calls), and one weighted
    ``n_features x n_features`` Gram matrix per sample, from which every
    surrogate fit of the feature selection is solved.

    Extras of the :class:`Explanation`: ``local_r2`` (the surrogate's
    weighted ``R^2``), ``intercept`` (``b``, the surrogate at the training
    mean) and ``local_prediction`` (the surrogate at ``x``), one per sample
    (and output, with ``target="all"``). ``base_values`` is None: the
    coefficients are slopes, not parts of the output.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> from sklears_neural.explain import LimeExplainer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> model = LinearRegression().fit(X, X @ [3.0, -2.0, 0.5])
    >>> explainer = LimeExplainer(model, training_data=X, random_state=0)
    >>> explanation = explainer.explain(X[:2])
    >>> np.round(explanation.values[0] / X.std(axis=0), 2)
    array([ 3. , -2. ,  0.5])
    >>> np.round(explanation.local_r2, 3)
    array([1., 1.])
    """

    _parameter_constraints: dict = {
        **Explainer._parameter_constraints,
        "training_data": ["array-like", None],
        "kernel_width": [Interval(Real, 0, None, closed="neither"), None],
        "num_samples": [Interval(Integral, 2, None, closed="left")],
        "num_features": [Interval(Integral, 1, None, closed="left"), None],
        "feature_selection": [StrOptions(set(FEATURE_SELECTION))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "n_jobs": [Integral, None],
    }

    def __init__(self, estimator, *, training_data=None, kernel_width=None,
                 num_samples=5000, num_features=10, feature_selection="auto",
                 random_state=None, output="auto", batch_size="auto", verbose=0,
                 n_jobs=None):
        self.estimator = estimator
        self.training_data = training_data
        self.kernel_width = kernel_width
        self.num_samples = num_samples
        self.num_features = num_features
        self.feature_selection = feature_selection
        self.random_state = random_state
        self.output = output
        self.batch_size = batch_size
        self.verbose = verbose
        self.n_jobs = n_jobs

    def _explain(self, X, target):
        f = PredictFunction(self.estimator, self.output, perturbed=True)
        rows, names = f.prepare(X)
        mean, scale = self._statistics(rows, f.sample_shape)
        outputs = f(rows)
        targets = resolve_targets(target, outputs, f.output_names, f.classifier)
        n, n_features = rows.shape
        width = (0.75 * np.sqrt(n_features) if self.kernel_width is None
                 else float(self.kernel_width))
        k = n_features if self.num_features is None else min(self.num_features,
                                                              n_features)
        method = self.feature_selection
        if method == "auto":
            method = "forward_selection" if k <= 6 else "highest_weights"

        seeds = seed_sequence(self.random_state).spawn(n)
        per_call = batch_rows(self.batch_size, n_features)
        per_chunk = max(1, per_call // self.num_samples)
        chunks = [np.arange(start, min(start + per_chunk, n))
                  for start in range(0, n, per_chunk)]

        def explain_chunk(members):
            return self._explain_rows(f, rows[members], [seeds[i] for i in members],
                                      None if targets is None else targets[members],
                                      mean, scale, width, k, method, per_call)

        with Progress(self.verbose, n, type(self).__name__, "sample") as progress:
            parts = parallel_map(explain_chunk, chunks, self.n_jobs, progress,
                                 weight=len)
        coef, intercept, r2, local = (np.concatenate(part) for part in zip(*parts))
        shape = f.sample_shape
        if targets is None:
            values = coef.reshape((n, *shape, coef.shape[-1]))
        else:
            values = coef[..., 0].reshape((n, *shape))
            intercept, r2, local = intercept[:, 0], r2[:, 0], local[:, 0]
        return Explanation(
            values, base_values=None, data=rows.reshape((n, *shape)),
            feature_names=names, output_names=f.output_names, targets=targets,
            output=f.output, method=type(self).__name__, feature_shape=shape,
            layout=f.layout, local_r2=r2, intercept=intercept, local_prediction=local,
        )

    def _statistics(self, rows, sample_shape):
        """Mean and scale (standard deviation, 0 -> 1) per flat feature."""
        if self.training_data is None:
            if len(rows) < 2:
                raise ValueError(
                    "LimeExplainer scales its perturbations by the training data's "
                    "standard deviation: pass training_data=X_train (without it, the "
                    "explained X stands in, which needs at least 2 samples)."
                )
            data = rows
        else:
            data = check_array(self.training_data, dtype=np.float64, allow_nd=True,
                               input_name="training_data")
            if data.shape[1:] != sample_shape:
                raise ValueError(
                    f"training_data has samples of shape {data.shape[1:]}; X has "
                    f"samples of shape {sample_shape}. Pass training_data in the "
                    "layout of X."
                )
            data = data.reshape(len(data), -1)
        scale = data.std(axis=0)
        return data.mean(axis=0), np.where(scale == 0, 1.0, scale)

    def _explain_rows(self, f, rows, seeds, targets, mean, scale, width, k, method,
                      per_call):
        """Surrogates of some samples: coefficients (n, D, K'), intercepts,
        R^2 and local predictions (n, K'), K' = 1 or every output."""
        noise = []
        for seed in seeds:
            e = np.random.default_rng(seed).standard_normal(
                (self.num_samples, rows.shape[1]))
            e[0] = 0.0  # the sample itself
            noise.append(e)
        noise = np.stack(noise)  # (n, N, D)
        perturbed = (rows[:, None, :] + noise * scale).reshape(-1, rows.shape[1])
        labels = np.concatenate([f(perturbed[start:start + per_call])
                                 for start in range(0, len(perturbed), per_call)])
        labels = labels.reshape(len(rows), self.num_samples, -1)
        results = [
            self._surrogate(noise[i] + (rows[i] - mean) / scale,
                            np.sqrt(np.exp(-(noise[i] ** 2).sum(axis=1) / width**2)),
                            labels[i] if targets is None
                            else labels[i][:, [targets[i]]],
                            k, method)
            for i in range(len(rows))
        ]
        return tuple(np.stack(part) for part in zip(*results))

    def _surrogate(self, Z, weights, Y, k, method):
        """One sample's weighted ridge surrogates, one per column of ``Y``."""
        gram = _WeightedGram(Z, weights, Y)
        n_features = Z.shape[1]
        coef = np.zeros((n_features, Y.shape[1]))
        intercept, r2, local = (np.zeros(Y.shape[1]) for _ in range(3))
        for column in range(Y.shape[1]):
            if k >= n_features or method == "none":
                used = np.arange(n_features)
            elif method == "forward_selection":
                used = gram.forward(column, k)
            elif method == "highest_weights":
                beta = gram.fit(np.arange(n_features), column, alpha=0.01)
                used = np.sort(np.argsort(-np.abs(beta), kind="stable")[:k])
            else:
                used = gram.lasso_path(column, k)
            beta = gram.fit(used, column, alpha=1.0)
            coef[used, column] = beta
            intercept[column] = gram.y_mean[column] - gram.x_mean[used] @ beta
            r2[column] = gram.r2(used, column, beta, alpha=1.0)
            local[column] = intercept[column] + Z[0, used] @ beta
        return coef, intercept, r2, local


class _WeightedGram:
    """Weighted, centered cross products of one sample's perturbations.

    A ridge fit with intercept and sample weights ``pi`` on features ``S``
    (scikit-learn's ``Ridge(alpha).fit(Z[:, S], y, sample_weight=pi)``) is
    ``beta = (G_SS + alpha I)^-1 b_S`` with ``G = Zc' diag(pi) Zc`` and
    ``b = Zc' diag(pi) yc`` (``Zc``, ``yc`` centered by their weighted
    means): each fit of a feature selection is a solve of at most
    ``num_features`` unknowns, without touching the samples again.
    """

    def __init__(self, Z, weights, Y):
        total = weights.sum()
        self.x_mean = weights @ Z / total
        self.y_mean = weights @ Y / total
        Zc, Yc = Z - self.x_mean, Y - self.y_mean
        weighted = Zc * weights[:, None]
        self.G = weighted.T @ Zc
        self.b = weighted.T @ Yc
        self.sst = weights @ Yc**2
        self._Zc, self._Yc, self._weights = Zc, Yc, weights

    def fit(self, used, column, alpha):
        if len(used) == 0:
            return np.zeros(0)
        G = self.G[np.ix_(used, used)] + alpha * np.eye(len(used))
        return _solve(G, self.b[used, column])

    def r2(self, used, column, beta, alpha):
        """Weighted R^2 of the fit (scikit-learn's ``score`` with sample weights)."""
        if self.sst[column] == 0:
            return 1.0  # a constant output is fitted exactly
        G = self.G[np.ix_(used, used)]
        sse = self.sst[column] - 2 * beta @ self.b[used, column] + beta @ G @ beta
        return 1.0 - sse / self.sst[column]

    def forward(self, column, k):
        """Greedy forward selection on the unregularized weighted R^2 (lime's)."""
        used = []
        candidates = list(range(self.G.shape[0]))
        for _ in range(k):
            # Solve every candidate's fit at once: stacked (s+1) x (s+1) systems.
            sets = np.array([used + [j] for j in candidates])
            G = self.G[sets[:, :, None], sets[:, None, :]]
            b = self.b[sets, column]
            beta = _solve(G, b)
            explained = np.einsum("ij,ij->i", beta, b)  # sst - sse at the optimum
            best = candidates[int(np.argmax(explained))]
            used.append(best)
            candidates.remove(best)
        return np.sort(np.array(used))

    def lasso_path(self, column, k):
        """The last set of at most ``k`` features on the weighted lasso path."""
        root = np.sqrt(self._weights)[:, None]
        _, _, coefs = lars_path(self._Zc * root, self._Yc[:, column] * root[:, 0],
                                method="lasso")
        for step in range(coefs.shape[1] - 1, -1, -1):
            used = np.flatnonzero(coefs[:, step])
            if len(used) <= k:
                return used
        return np.zeros(0, dtype=np.intp)


def _solve(G, b):
    """``G^-1 b`` (batched), by least squares where ``G`` is singular."""
    try:
        return np.linalg.solve(G, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        if G.ndim == 2:
            return np.linalg.lstsq(G, b, rcond=None)[0]
        return np.stack([np.linalg.lstsq(g, v, rcond=None)[0] for g, v in zip(G, b)])
