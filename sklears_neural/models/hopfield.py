"""Hopfield networks: associative memories that store patterns and recall them.

:class:`HopfieldNetwork` is not trained by gradient descent: ``fit`` stores
the patterns in closed form (the Hebbian rule, or the patterns themselves
for the modern continuous network) and ``predict`` runs the recall
dynamics. Like :class:`~sklears_neural.BernoulliRBM` it is a plain
scikit-learn estimator outside the training core, whose fitted state is
NumPy arrays (pickle and ``save``/``load`` keep it exactly).
"""

from numbers import Integral, Real

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sklears_neural.core._compat import Interval, _fit_context
from sklears_neural.core.persistence import SaveLoadMixin
from sklears_neural.core.registry import register_estimator

__all__ = ["HopfieldNetwork"]


@register_estimator
class HopfieldNetwork(SaveLoadMixin, BaseEstimator):
    """Hopfield network: store patterns with ``fit``, recall them with ``predict``.

    Two memories:

    - ``kind="binary"``: the classic network of ``n_features`` units with
      states ±1. ``fit`` stores the patterns with the Hebbian outer-product
      rule, ``W = X^T X / n_features`` with a zero diagonal; ``predict``
      sets ``s_i <- sign(sum_j W_ij s_j)`` (a unit whose field is exactly 0
      keeps its state) until no unit changes, or ``max_iter`` sweeps. It
      recalls reliably up to about ``0.14 * n_features`` random patterns
      and fails beyond (Amit, Gutfreund and Sompolinsky, 1985).
    - ``kind="continuous"``: the modern Hopfield network of Ramsauer et al.
      (2020), "Hopfield networks is all you need": ``fit`` keeps the
      patterns ``X`` (rows ``x_k``) and ``predict`` iterates the attention
      update ``xi <- X^T softmax(beta * X xi)``, which retrieves a stored
      pattern from a noisy or partial query with a capacity exponential in
      ``n_features``.

    Parameters
    ----------
    kind : {"binary", "continuous"}, default="binary"
        Which memory.
    beta : float, default=1.0
        Inverse temperature of the continuous update; larger values
        separate the stored patterns more sharply (one step then lands on
        the nearest pattern). Unused by the binary network.
    max_iter : int, default=100
        Recall sweeps at most; recall ends earlier when every query has
        reached a fixed point.
    update : {"synchronous", "asynchronous"}, default="synchronous"
        Binary network: "synchronous" updates every unit at once from the
        same state (fast; can end in a 2-cycle, which then stops at
        ``max_iter``); "asynchronous" updates the units one at a time in a
        random order per sweep (the energy never increases, so it always
        reaches a fixed point). The continuous network always updates the
        whole state.
    tol : float, default=1e-6
        Continuous network: recall of a query stops when its update moves it
        by at most ``tol`` (max absolute change).
    random_state : int, RandomState instance or None, default=None
        Orders of the asynchronous updates. An int gives the same order on
        every ``predict`` call; the same order serves every query, so a
        query's recall does not depend on the other rows.

    Attributes
    ----------
    weights_ : ndarray of shape (n_features_in_, n_features_in_) or None
        Binary network: the Hebbian weights (symmetric, zero diagonal).
        None for the continuous network.
    patterns_ : ndarray of shape (n_patterns, n_features_in_)
        The stored patterns: as ±1 for the binary network, as given for the
        continuous one.
    states_ : ndarray of shape (2,) or None
        Binary network: the coding of X and of ``predict``'s output,
        ``[0, 1]`` when ``fit`` saw only 0 and 1, ``[-1, 1]`` otherwise.
        None for the continuous network.
    n_features_in_ : int
        Units (features).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.

    See Also
    --------
    BernoulliRBM : A trained (stochastic) relative of the binary network.
    EnergyBasedModel : A neural energy trained by contrastive divergence.

    Notes
    -----
    Binary input is mapped to states by ``s = +1 where x > t, else -1``,
    with ``t = 0.5`` for the ``[0, 1]`` coding and ``t = 0`` otherwise;
    real-valued X is thereby binarized by its sign. ``predict`` returns
    the recalled states in the coding ``states_``.

    ``score_samples`` is minus the energy: ``-E(s) = s^T W s / 2`` for the
    binary network, and for the continuous one
    ``-E(xi) = lse(beta, X xi) - xi^T xi / 2 - log(n_patterns) / beta -
    M^2 / 2`` (``lse`` the log-sum-exp at inverse temperature ``beta``,
    ``M`` the largest pattern norm), the energy whose minimization the
    update performs (Ramsauer et al., 2020, eq. 2). Stored patterns are
    near its maxima. Neither is a normalized log-density.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.hopfield import HopfieldNetwork
    >>> rng = np.random.default_rng(0)
    >>> patterns = rng.choice([-1, 1], size=(5, 100))
    >>> net = HopfieldNetwork().fit(patterns)
    >>> noisy = patterns.copy()
    >>> noisy[:, :10] *= -1
    >>> bool((net.predict(noisy) == patterns).all())
    True
    """

    _parameter_constraints: dict = {
        "kind": [StrOptions({"binary", "continuous"})],
        "beta": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "update": [StrOptions({"synchronous", "asynchronous"})],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, kind="binary", *, beta=1.0, max_iter=100, update="synchronous",
                 tol=1e-6, random_state=None):
        self.kind = kind
        self.beta = beta
        self.max_iter = max_iter
        self.update = update
        self.tol = tol
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Store the patterns ``X``.

        Parameters
        ----------
        X : array-like of shape (n_patterns, n_features)
            Binary network: patterns of 0/1 or -1/+1 (other values are
            binarized by sign, see Notes). Continuous network: real patterns.
        y : None
            Ignored.

        Returns
        -------
        self : HopfieldNetwork
        """
        X = validate_data(self, X, dtype=np.float64)
        if self.kind == "binary":
            binary01 = bool(np.all((X == 0) | (X == 1))) and bool(np.any(X == 0))
            self.states_ = np.array([0.0, 1.0]) if binary01 else np.array([-1.0, 1.0])
            patterns = self._to_spins(X)
            weights = patterns.T @ patterns / X.shape[1]
            np.fill_diagonal(weights, 0.0)
            self.weights_ = weights
            self.patterns_ = patterns
        else:
            self.states_ = None
            self.weights_ = None
            self.patterns_ = X.copy()
        return self

    def _to_spins(self, X):
        threshold = 0.5 if self.states_[0] == 0 else 0.0
        return np.where(X > threshold, 1.0, -1.0)

    def _from_spins(self, S):
        return S if self.states_[0] == -1 else (S + 1.0) / 2.0

    def _validate(self, X):
        check_is_fitted(self, "patterns_")
        return validate_data(self, X, dtype=np.float64, reset=False)

    def predict(self, X):
        """Recall: run the dynamics from each row of ``X`` to a fixed point.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Queries: noisy or partial patterns (a partial one can hold
            zeros, or -1/0 for unknown units of a ±1 / 0-1 coding).

        Returns
        -------
        X_recalled : ndarray of shape (n_samples, n_features)
            The states reached, in the coding of ``fit`` (binary), or the
            retrieved vectors (continuous).
        """
        X = self._validate(X)
        if self.kind == "binary":
            return self._from_spins(self._recall_binary(self._to_spins(X)))
        return self._recall_continuous(X)

    def _recall_binary(self, S):
        W = self.weights_
        S = S.copy()
        # A row stops once it reaches a fixed point, so its result never
        # depends on the other rows of the batch.
        active = np.ones(S.shape[0], dtype=bool)
        rng = check_random_state(self.random_state)
        for _ in range(self.max_iter):
            rows = np.flatnonzero(active)
            if rows.size == 0:
                break
            current = S[rows]
            if self.update == "synchronous":
                field = current @ W
                new = np.where(field > 0, 1.0, np.where(field < 0, -1.0, current))
            else:
                new = current.copy()
                for i in rng.permutation(W.shape[0]):
                    field = new @ W[:, i]
                    new[:, i] = np.where(field > 0, 1.0,
                                         np.where(field < 0, -1.0, new[:, i]))
            changed = np.any(new != current, axis=1)
            S[rows] = new
            active[rows[~changed]] = False
        return S

    def _recall_continuous(self, X):
        patterns, beta = self.patterns_, float(self.beta)
        xi = X.copy()
        active = np.ones(xi.shape[0], dtype=bool)
        for _ in range(self.max_iter):
            rows = np.flatnonzero(active)
            if rows.size == 0:
                break
            new = softmax(beta * xi[rows] @ patterns.T, axis=1) @ patterns
            moved = np.max(np.abs(new - xi[rows]), axis=1) > self.tol
            xi[rows] = new
            active[rows[~moved]] = False
        return xi

    def score_samples(self, X):
        """Minus the energy of each row (greater: nearer a stored pattern).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            ``-E(x)``, see Notes; not normalized.
        """
        X = self._validate(X)
        if self.kind == "binary":
            S = self._to_spins(X)
            return 0.5 * np.einsum("ij,jk,ik->i", S, self.weights_, S)
        patterns, beta = self.patterns_, float(self.beta)
        lse = logsumexp(beta * X @ patterns.T, axis=1) / beta
        largest = np.max(np.sum(patterns**2, axis=1))
        return (lse - 0.5 * np.sum(X**2, axis=1)
                - np.log(patterns.shape[0]) / beta - 0.5 * largest)

    def score(self, X, y=None):
        """Mean of :meth:`score_samples` over ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))
