"""Kernel SHAP: Shapley values of any model, from its predictions alone.

The model is evaluated on *synthetic rows*: the explained sample's values on
a coalition of features, a background sample's values on the others. Every
synthetic row of every explained sample goes through a few large model calls
(``batch_size`` rows each), not one call per coalition or per sample, which
is what makes this several times faster than ``shap.KernelExplainer`` on the
same budget (see doc/benchmarks.md, "Explainers").
"""

import itertools
from math import comb
from numbers import Integral

import numpy as np
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

__all__ = ["KernelShapExplainer"]

#: Largest number of varying features ``exact=True`` enumerates: 2**20
#: coalitions, times the background rows, per explained sample.
MAX_EXACT_FEATURES = 20
#: ``exact="auto"`` enumerates every coalition up to this many varying
#: features (4,094 coalitions, about twice the default sampled budget).
AUTO_EXACT_FEATURES = 12


# -- coalitions ---------------------------------------------------------------------


def _shapley_weights(n_features):
    """``w[s] = s! (M - s - 1)! / M!``: the Shapley weight of a coalition of size s."""
    M = n_features
    return np.array([1.0 / (M * comb(M - 1, s)) for s in range(M)])


def exact_coalitions(n_features):
    """Every coalition, and the matrix that turns their values into Shapley values.

    Returns
    -------
    masks : ndarray of bool of shape (2**M, M)
        Row ``c`` is the coalition whose bit ``j`` of ``c`` is set.
    coefficients : ndarray of shape (M, 2**M)
        ``phi = coefficients @ v`` for coalition values ``v``:
        ``phi_j = sum_{S not containing j} w(|S|) (v(S + j) - v(S))``.
    """
    M = n_features
    codes = np.arange(2**M)
    masks = ((codes[:, None] >> np.arange(M)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    w = np.append(_shapley_weights(M), 0.0)  # w[M] never applies: padding
    with_j = w[np.maximum(sizes - 1, 0)]  # v(S) enters phi_j, j in S, as v(S' + j)
    without_j = w[np.minimum(sizes, M)]  # ... and, j not in S, as -v(S)
    coefficients = np.where(masks.T, with_j[None, :], -without_j[None, :])
    return masks, coefficients


def sample_coalitions(n_features, nsamples, rng):
    """Coalitions and their Shapley-kernel weights for a sampled budget.

    The scheme of Lundberg and Lee (2017), as ``shap.KernelExplainer`` runs
    it: the kernel ``pi(S) = (M - 1) / (C(M, |S|) |S| (M - |S|))`` puts its
    mass on the smallest and largest coalitions, so coalition sizes are
    taken in pairs ``(s, M - s)`` from the outside in, and a size pair is
    enumerated completely while the budget covers its share of the kernel's
    mass; the remaining sizes are sampled (size by its remaining mass, then
    a uniform subset of that size, with its complement), duplicates adding
    to a coalition's weight instead of costing budget.

    Returns
    -------
    masks : ndarray of bool of shape (n_coalitions, M)
        Without the empty and the full coalition, which the efficiency
        constraint covers. ``n_coalitions <= min(nsamples, 2**M - 2)``.
    weights : ndarray of shape (n_coalitions,)
        Kernel weights, summing to 1.
    """
    M = n_features
    budget = min(nsamples, 2**M - 2) if M <= 30 else nsamples
    n_sizes = (M - 1 + 1) // 2  # ceil((M - 1) / 2)
    n_paired = (M - 1) // 2  # sizes s whose complement size M - s differs
    size_weight = np.array([(M - 1) / (s * (M - s)) for s in range(1, n_sizes + 1)])
    size_weight[:n_paired] *= 2
    size_weight /= size_weight.sum()

    masks, weights = [], []
    left, remaining, n_full = budget, size_weight.copy(), 0
    for s in range(1, n_sizes + 1):
        paired = s <= n_paired
        count = comb(M, s) * (2 if paired else 1)
        if left * remaining[s - 1] / count < 1.0 - 1e-8:
            break
        n_full += 1
        left -= count
        if remaining[s - 1] < 1.0:
            remaining /= 1.0 - remaining[s - 1]
        chosen = np.zeros((comb(M, s), M), dtype=bool)
        for row, features in enumerate(itertools.combinations(range(M), s)):
            chosen[row, list(features)] = True
        block = np.concatenate([chosen, ~chosen]) if paired else chosen
        masks.append(block)
        weights.append(np.full(len(block), size_weight[s - 1] / count))

    if n_full < n_sizes and left > 0:
        sampled, counts = _draw_coalitions(M, left, size_weight, n_full, n_paired, rng)
        masks.append(sampled)
        weights.append(counts * size_weight[n_full:].sum() / counts.sum())
    if not masks:
        return np.zeros((0, M), dtype=bool), np.zeros(0)
    return np.concatenate(masks), np.concatenate(weights)


def _draw_coalitions(M, budget, size_weight, n_full, n_paired, rng):
    """``budget`` distinct sampled coalitions (with complements) and their draw counts.

    Draws are read in order until they bring ``budget`` distinct coalitions
    (a draw of a paired size brings two: it and its complement, the second
    dropped if the budget ends between them); a draw of a coalition already
    found adds 1 to its count, and its complement's, instead of spending
    budget, as in shap.
    """
    # Each draw of a paired size brings two coalitions: halve their odds.
    p = size_weight.copy()
    p[:n_paired] /= 2
    p = p[n_full:] / p[n_full:].sum()
    sizes = np.zeros(0, dtype=np.intp)
    drawn = np.zeros((0, M), dtype=bool)
    for _ in range(8):  # rounds of draws; the first nearly always suffices
        more = rng.choice(len(p), size=budget, p=p) + n_full + 1
        ranks = rng.random((len(more), M)).argsort(axis=1).argsort(axis=1)
        sizes = np.concatenate([sizes, more])
        drawn = np.concatenate([drawn, ranks < more[:, None]])  # uniform subsets
        # Complements (sizes above M / 2) are never drawn: drawn masks are keys.
        keys = np.packbits(drawn, axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True,
                                      return_inverse=True)
        inverse = np.ravel(inverse)
        new = first[inverse] == np.arange(len(drawn))
        paired = sizes <= n_paired
        brought = np.cumsum(np.where(new, np.where(paired, 2, 1), 0))
        if brought[-1] >= budget:
            break
    stop = int(np.searchsorted(brought, budget)) if brought[-1] >= budget \
        else len(drawn) - 1
    counts = np.bincount(inverse[:stop + 1]).astype(np.float64)
    found = np.flatnonzero(new[:stop + 1])
    with_complement = found[paired[found]]
    if brought[stop] > budget:  # the last draw's complement is over budget
        with_complement = with_complement[with_complement != found[-1]]
    masks = np.concatenate([drawn[found], ~drawn[with_complement]])
    weights = np.concatenate([counts[inverse[found]], counts[inverse[with_complement]]])
    return masks, weights


def solve_constrained(masks, weights, values, totals):
    """Kernel SHAP's weighted least squares under the efficiency constraint.

    Minimizes ``sum_c k_c (v_c - sum_j z_cj phi_j)^2`` subject to
    ``sum_j phi_j = total``, for many right-hand sides at once (every sample
    and output of a group shares the coalitions): the last feature is
    eliminated with the constraint, the rest solved by least squares.

    Parameters
    ----------
    masks : ndarray of bool of shape (C, M)
    weights : ndarray of shape (C,)
    values : ndarray of shape (C, R)
        ``v(S) - base`` per coalition and right-hand side.
    totals : ndarray of shape (R,)
        ``f(x) - base`` per right-hand side.

    Returns
    -------
    ndarray of shape (M, R)
    """
    Z = masks.astype(np.float64)
    A = Z[:, :-1] - Z[:, -1:]
    b = values - Z[:, -1:] * totals[None, :]
    weighted = A * weights[:, None]
    try:  # normal equations: (M-1) x (M-1), whatever the number of coalitions
        head = np.linalg.solve(weighted.T @ A, weighted.T @ b)
    except np.linalg.LinAlgError:  # too few distinct coalitions: least norm
        root = np.sqrt(weights)[:, None]
        head = np.linalg.lstsq(root * A, root * b, rcond=None)[0]
    return np.vstack([head, totals[None, :] - head.sum(axis=0)])


# -- background -----------------------------------------------------------------------


def summarize(background, n_clusters, random_state):
    """A weighted k-means summary of background rows (like ``shap.kmeans``).

    Each of ``n_clusters`` k-means centers (scikit-learn's ``KMeans``,
    ``n_init=10``) is weighted by its cluster's share of the rows, and each
    of its values is moved to the nearest value the feature takes in the
    data, so that integer, binary and one-hot features keep values the
    model has seen.

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
    weights : ndarray of shape (n_clusters,), summing to 1
    """
    from sklearn.cluster import KMeans

    seed = int(random_state) if isinstance(random_state, (Integral, np.integer)) else 0
    kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(background)
    centers = kmeans.cluster_centers_.copy()
    for j in range(background.shape[1]):
        centers[:, j] = _nearest(background[:, j], centers[:, j])
    counts = np.bincount(kmeans.labels_, minlength=n_clusters).astype(np.float64)
    return centers, counts / counts.sum()


def _nearest(column, targets):
    """The value of ``column`` nearest each target; on a tie, the one that
    comes first in ``column`` (what ``argmin`` over the column, and shap, pick)."""
    values, first = np.unique(column, return_index=True)
    if len(values) == 1:
        return np.full(len(targets), values[0])
    right = np.clip(np.searchsorted(values, targets), 1, len(values) - 1)
    left = right - 1
    to_left, to_right = np.abs(values[left] - targets), np.abs(values[right] - targets)
    tie = (to_left == to_right) & (first[left] < first[right])
    pick_left = (to_left < to_right) | tie
    return np.where(pick_left, values[left], values[right])


# -- the explainer ------------------------------------------------------------------


class KernelShapExplainer(Explainer):
    """Kernel SHAP: Shapley values of any fitted estimator or pipeline.

    The Shapley value of feature ``j`` at sample ``x`` (Lundberg and Lee,
    2017) averages, over coalitions ``S`` of the other features, what adding
    ``j`` changes in the expected output when the features outside the
    coalition come from the background:

    .. math::

        \\phi_j = \\sum_{S \\subseteq F \\setminus \\{j\\}}
            \\frac{|S|!\\,(M - |S| - 1)!}{M!} (v(S \\cup \\{j\\}) - v(S)),
        \\qquad v(S) = \\sum_b w_b f(x_S, z^{(b)}_{\\bar S})

    over background rows ``z^(b)`` of weights ``w_b``. The values add up
    exactly to the output minus the base value:
    ``sum_j phi_j = f(x) - E_w[f(z)]`` (``base_values``).

    Two ways to compute them:

    - **exact** (``exact="auto"`` with at most 12 varying features, or
      ``exact=True``): all ``2**M`` coalitions are evaluated and combined with
      the formula above.
    - **sampled**: ``nsamples`` coalitions drawn as ``shap.KernelExplainer``
      draws them (sizes enumerated from the outside in while the budget
      covers them, the rest sampled with their complements), and the values
      solved as Kernel SHAP's weighted least squares under the efficiency
      constraint, which holds exactly. No L1 feature selection: every
      varying feature gets a value.

    Features whose value at ``x`` equals every background row's cannot
    change the output; they get 0 and are left out of the coalitions (``M``
    counts the *varying* features), as in shap.

    Explains ``output``: a classifier's ``predict_proba`` columns by default
    (``target``: the predicted class), its decision function with
    ``output="logit"``; a regressor's predictions. Works on any estimator
    or :class:`~sklearn.pipeline.Pipeline` with ``predict`` (in the space of
    the pipeline's input), our torch estimators included: images and
    sequences (3-D arrays) are explained value by value.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
    background : array-like of shape (n_background_rows, ...)
        Samples in the layout the estimator takes (rows, images, 3-D
        sequences) that stand for "feature absent": typically the training
        set, or a part of it. Required.
    n_background : int or None, default=10
        When ``background`` has more rows, it is summarized by a weighted
        k-means of this many centers (like ``shap.kmeans``; the seed is
        ``random_state`` when an int, else 0, so that the summary, and exact
        values, do not change between calls). None uses every row.
        Cost is proportional to the rows used.
    nsamples : int or "auto", default="auto"
        Coalitions evaluated per explained sample in sampled mode (shap's
        name and meaning); ``"auto"`` is shap's ``2 * M + 2048``. Capped at
        ``2**M - 2``, where sampling becomes a complete enumeration.
    exact : bool or "auto", default="auto"
        ``"auto"``: exact with at most 12 varying features, sampled above.
        True: always exact (at most 20 varying features). False: always
        sampled.
    random_state : None, int or RandomState, default=None
        Seeds the coalition sampling (and the k-means summary, see
        ``n_background``). Values do not depend on ``n_jobs`` or
        ``batch_size``.
    output : {"auto", "probability", "logit"}, default="auto"
    batch_size : int or "auto", default="auto"
        Synthetic rows per model call; ``"auto"`` keeps a call near 2**20
        input values (at most 4,096 rows).
    verbose : int, default=0
        Draw a progress bar over the model calls on stderr.
    n_jobs : int or None, default=None
        Threads evaluating model calls in parallel (the model must be safe to
        call from threads; ours and scikit-learn's are). None: one.

    See Also
    --------
    LimeExplainer : a local linear surrogate instead of Shapley values.
    PermutationImportance : a global importance per feature.

    Notes
    -----
    Cost: ``2 + n_samples * C * B / batch_size`` model calls over
    ``n_samples * C * B`` synthetic rows, ``C`` the coalitions (``2**M - 2``
    exact, ``min(nsamples, 2**M - 2)`` sampled) and ``B`` the background
    rows. Samples with the same varying features share one set of
    coalitions, and their least squares share one factorization.

    Extras of the :class:`Explanation`: ``n_coalitions`` (per sample, the
    coalitions evaluated) and ``exact`` (per sample, whether every coalition
    was).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklears_neural.explain import KernelShapExplainer
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X, y)
    >>> explanation = KernelShapExplainer(model, background=X).explain(X[:3])
    >>> explanation.values.shape
    (3, 4)
    >>> total = explanation.values.sum(axis=1) + explanation.base_values
    >>> proba = model.predict_proba(X[:3])[[0, 1, 2], explanation.targets]
    >>> bool(abs(total - proba).max() < 1e-9)
    True
    """

    _parameter_constraints: dict = {
        **Explainer._parameter_constraints,
        "background": ["array-like", None],
        "n_background": [Interval(Integral, 1, None, closed="left"), None],
        "nsamples": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "exact": ["boolean", StrOptions({"auto"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "n_jobs": [Integral, None],
    }

    def __init__(self, estimator, *, background=None, n_background=10, nsamples="auto",
                 exact="auto", random_state=None, output="auto", batch_size="auto",
                 verbose=0, n_jobs=None):
        self.estimator = estimator
        self.background = background
        self.n_background = n_background
        self.nsamples = nsamples
        self.exact = exact
        self.random_state = random_state
        self.output = output
        self.batch_size = batch_size
        self.verbose = verbose
        self.n_jobs = n_jobs

    # -- explain ------------------------------------------------------------

    def _explain(self, X, target):
        f = PredictFunction(self.estimator, self.output, perturbed=True)
        rows, names = f.prepare(X)
        background, bg_weights = self._background(f)
        outputs = f(rows)  # f(x), and the output names for the targets
        base = bg_weights @ f(background)  # E_w[f(z)], (n_outputs,)
        targets = resolve_targets(target, outputs, f.output_names, f.classifier)

        varying = _varying(rows, background)
        groups = _groups(varying)
        rng = np.random.default_rng(seed_sequence(self.random_state))
        plans = [self._plan(varying[members[0]], rng) for members in groups]
        per_call = batch_rows(self.batch_size, rows.shape[1])
        calls = sum(_n_calls(len(members) * len(plan[0]), len(background), per_call)
                    for members, plan in zip(groups, plans))

        phi = np.zeros(rows.shape + (outputs.shape[1],))
        n_coalitions = np.zeros(len(rows), dtype=np.intp)
        exact = np.zeros(len(rows), dtype=bool)
        with Progress(self.verbose, calls, type(self).__name__, "call") as progress:
            for members, (masks, weights, is_exact, features) in zip(groups, plans):
                coalition_values = _coalition_values(
                    f, rows[members], _full_masks(masks, features, rows.shape[1]),
                    background, bg_weights, per_call, self.n_jobs, progress,
                )
                phi[np.ix_(members, features)] = _shapley_values(
                    coalition_values, masks, weights, base,
                    outputs[members] - base, len(features),
                )
                n_coalitions[members] = len(masks)
                exact[members] = is_exact
        return self._explanation(rows, f, phi, base, outputs, targets, names,
                                 n_coalitions, exact)

    def _background(self, f):
        """Background rows (flat) and their weights."""
        if self.background is None:
            raise ValueError(
                "KernelShapExplainer needs background data: the values feature "
                "absence takes. Pass background=X_train (or a sample of it); it is "
                f"summarized to n_background={self.n_background} weighted k-means "
                "centers."
            )
        background = check_array(self.background, dtype=np.float64, allow_nd=True,
                                 input_name="background")
        if background.shape[1:] != f.sample_shape:
            raise ValueError(
                f"background has samples of shape {background.shape[1:]}; X has "
                f"samples of shape {f.sample_shape}. Pass background in the layout "
                "of X."
            )
        background = background.reshape(len(background), -1)
        if self.n_background is not None and len(background) > self.n_background:
            return summarize(background, self.n_background, self.random_state)
        return background, np.full(len(background), 1.0 / len(background))

    def _plan(self, varying, rng):
        """``(masks, weights, exact, features)`` for samples varying in ``varying``."""
        features = np.flatnonzero(varying)
        M = len(features)
        exact = self.exact is True or (
            self.exact == "auto" and M <= AUTO_EXACT_FEATURES)
        if M <= 1:  # nothing to share: phi = f(x) - base, or nothing
            return np.zeros((0, M), dtype=bool), np.zeros(0), True, features
        if exact:
            if M > MAX_EXACT_FEATURES:
                raise ValueError(
                    f"exact=True enumerates all 2**M coalitions, and these samples "
                    f"have M={M} varying features (at most {MAX_EXACT_FEATURES}). Use "
                    "exact='auto', which samples nsamples coalitions above "
                    f"{AUTO_EXACT_FEATURES} features."
                )
            masks, _ = exact_coalitions(M)
            return masks[1:-1], None, True, features  # empty and full: base, f(x)
        nsamples = 2 * M + 2048 if self.nsamples == "auto" else self.nsamples
        if nsamples < M and nsamples < 2**M - 2:
            raise ValueError(
                f"nsamples={nsamples} coalitions cannot determine the values of "
                f"M={M} varying features: pass nsamples >= {M} (the default "
                f"'auto' gives 2 * M + 2048 = {2 * M + 2048})."
            )
        masks, weights = sample_coalitions(M, nsamples, rng)
        return masks, weights, len(masks) == 2**M - 2 if M <= 30 else False, features

    def _explanation(self, rows, f, phi, base, outputs, targets, names, n_coalitions,
                     exact):
        n = len(rows)
        shape = f.sample_shape
        if targets is None:
            values = phi.reshape((n, *shape, phi.shape[-1]))
            base_values = np.tile(base, (n, 1))
        else:
            values = phi[np.arange(n), :, targets].reshape((n, *shape))
            base_values = base[targets]
        return Explanation(
            values, base_values=base_values, data=rows.reshape((n, *shape)),
            feature_names=names, output_names=f.output_names, targets=targets,
            output=f.output, method=type(self).__name__, feature_shape=shape,
            layout=f.layout, n_coalitions=n_coalitions, exact=exact,
        )


def _varying(rows, background):
    """Per sample, the features whose value differs from some background row's."""
    chunk = max(1, 2**22 // max(1, background.size))  # compare ~4M values at a time
    return np.concatenate([
        (rows[start:start + chunk, None, :] != background[None]).any(axis=1)
        for start in range(0, len(rows), chunk)
    ])


def _groups(varying):
    """Indices of the samples, grouped by their set of varying features."""
    _, inverse = np.unique(np.packbits(varying, axis=1), axis=0, return_inverse=True)
    inverse = np.ravel(inverse)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


def _n_calls(n_pairs, n_background, per_call):
    """Model calls :func:`_coalition_values` makes."""
    if per_call >= n_background:
        return -(-n_pairs // (per_call // n_background))
    return n_pairs * -(-n_background // per_call)


def _full_masks(masks, features, n_features):
    """Coalitions over the varying ``features`` as masks over every feature."""
    full = np.zeros((len(masks), n_features), dtype=bool)
    full[:, features] = masks
    return full


def _coalition_values(f, rows, masks, background, bg_weights, per_call, n_jobs,
                      progress):
    """``v(S) = sum_b w_b f(x_S, z_b)`` of every sample and coalition: (n, C, K).

    The (sample, coalition) pairs are numbered ``i * C + c``; a model call
    takes whole pairs, each with all its ``B`` background rows (``per_call
    // B`` pairs), or, for a background larger than ``per_call``, one pair
    with a slice of its background rows.
    """
    n, C, B = len(rows), len(masks), len(background)
    n_pairs = n * C
    if n_pairs == 0:
        return np.zeros((n, C, 0))
    pairs_per_call = per_call // B
    if pairs_per_call:
        blocks = [(p, min(p + pairs_per_call, n_pairs), 0, B)
                  for p in range(0, n_pairs, pairs_per_call)]
    else:
        blocks = [(p, p + 1, b, min(b + per_call, B))
                  for p in range(n_pairs) for b in range(0, B, per_call)]

    inside = masks.astype(np.float64)
    outside = 1.0 - inside

    def evaluate(block):
        first, last, b0, b1 = block
        i, c = np.divmod(np.arange(first, last), C)
        # (pairs, background rows, features): x on the coalition, z elsewhere,
        # as (1 - m) z + m x, exact for finite values (0 z + x = x, z + 0 x = z)
        # and twice as fast as np.where over the broadcast mask.
        synthetic = outside[c][:, None, :] * background[None, b0:b1, :]
        synthetic += (inside[c] * rows[i])[:, None, :]
        out = f(synthetic.reshape(-1, rows.shape[1]))
        out = out.reshape(last - first, b1 - b0, -1)
        return np.einsum("pbk,b->pk", out, bg_weights[b0:b1])

    results = parallel_map(evaluate, blocks, n_jobs, progress)
    values = np.zeros((n_pairs, results[0].shape[1]))
    for (first, last, _, _), part in zip(blocks, results):
        values[first:last] += part
    return values.reshape(n, C, -1)


def _shapley_values(coalition_values, masks, weights, base, totals, M):
    """Values ``(n, M, n_outputs)`` of one group from its coalition values.

    ``coalition_values`` (n, C, n_outputs) holds ``v(S)`` of every coalition
    but the empty (``v = base``) and the full one (``v = f(x) = base +
    totals``): those two come from the model's outputs directly, so that the
    efficiency constraint holds to rounding whatever the batch composition.
    ``weights`` is None for the exact enumeration.
    """
    n, n_outputs = totals.shape
    if M <= 1:
        return totals[:, None, :] if M else np.zeros((n, 0, n_outputs))
    centered = coalition_values - base  # v(S) - base
    if weights is None:  # exact: the Shapley formula over all 2**M coalitions
        all_values = np.concatenate(
            [np.zeros((n, 1, n_outputs)), centered, totals[:, None, :]], axis=1)
        _, coefficients = exact_coalitions(M)
        return np.einsum("jc,nck->njk", coefficients, all_values)
    # sampled: one least squares for every sample and output of the group
    C = len(masks)
    rhs = centered.transpose(1, 0, 2).reshape(C, n * n_outputs)
    phi = solve_constrained(masks, weights, rhs, totals.reshape(-1))
    return phi.reshape(M, n, n_outputs).transpose(1, 0, 2)
