"""OnceForAllNetwork: train one elastic MLP, then extract subnets that meet
a budget without retraining (Cai et al., 2020, "Once-for-All")."""

import copy
import itertools
import time
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import HasMethods, Interval, _fit_context
from sklears_neural.nn.supernet import (
    SupernetTask,
    batches,
    check_family,
    check_plain_mlp,
    check_widths,
    extract_mlp,
    n_parameters,
)

__all__ = ["OnceForAllNetwork"]


class OnceForAllNetwork(MetaEstimatorMixin, BaseEstimator):
    """One elastic MLP trained once; fitted subnets extracted to a budget.

    The supernet has ``max(depths)`` hidden layers of ``max(widths)``
    units. A subnet keeps the first ``d`` layers (``d`` in ``depths``) and
    the first ``w_i`` units of layer ``i`` (``w_i`` in ``widths``), so it
    is a slice of the supernet's weights. Training follows progressive
    shrinking: the largest network first (``n_epochs_full`` epochs), then
    stages of ``n_epochs_stage`` epochs that each let one more depth, then
    one more width, be sampled (each batch trains one subnet drawn from
    the stage's choices), with knowledge distillation from a frozen copy
    of the largest network. :meth:`extract` copies the slice of the best
    subnet under a parameter or latency budget into an ordinary fitted
    ``estimator``, without retraining.

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor
        The estimator extracted subnets become (its activation is the
        supernet's; its other parameters are kept, so extracted ones can
        continue training with ``warm_start``). Plain layers only:
        ``batch_norm``, ``layer_norm``, ``residual``, ``noise`` and
        ``spectral_norm`` must be off.
    widths : list of int, default=(16, 32, 64, 128, 256)
        Elastic widths of each hidden layer.
    depths : list of int, default=(1, 2)
        Elastic numbers of hidden layers.
    n_epochs_full : int, default=20
        Epochs of the largest network.
    n_epochs_stage : int, default=8
        Epochs of each shrinking stage (``len(depths) - 1`` depth stages,
        then ``len(widths) - 1`` width stages).
    distillation : float, default=1.0
        Weight of the distillation loss (subnet towards the frozen
        largest network: KL divergence of class probabilities, squared
        error for regression) added to the training loss in the stages.
    sandwich : bool, default=True
        In the shrinking stages, train the largest network at every step
        beside the sampled subnet (the sandwich rule of BigNAS), so that
        it keeps its accuracy.
    batch_size : int, default=32
    learning_rate : float, default=3e-3
        Adam step size (``torch.optim.Adam``, fresh for each stage).
    validation_fraction : float, default=0.2
        Share of ``X`` held out to rank subnets for :meth:`extract`.
    max_subnets : int, default=400
        Subnets scored on the validation part; a larger space is sampled
        (always keeping the largest and smallest).
    random_state : int, RandomState or None, default=None
        Seeds the split, the initialization and the subnet draws.
    verbose : int, default=0

    Attributes
    ----------
    supernet_ : SuperMLP
        The trained supernet.
    subnets_ : dict of ndarray
        One entry per scored subnet: ``hidden_layer_sizes`` (tuples),
        ``n_params`` and ``valid_score`` (accuracy or R^2 on the held-out
        part, with the supernet's weights); ``pandas.DataFrame`` reads it.
    history_ : list of dict
        Per epoch: ``stage``, ``epoch``, ``train_loss``, ``valid_score``
        of the largest and of the smallest subnet.
    best_estimator_ : estimator
        The subnet with the best validation score, extracted
        (:meth:`predict` and :meth:`score` use it).
    fit_time_ : float
        Seconds to train the supernet and score the subnets.
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.search.once_for_all import OnceForAllNetwork
    >>> X, y = load_digits(return_X_y=True)
    >>> ofa = OnceForAllNetwork(MLPClassifier(), widths=(8, 16), depths=(1, 2),
    ...                         n_epochs_full=2, n_epochs_stage=1,
    ...                         random_state=0).fit(X[:300] / 16, y[:300])
    >>> small = ofa.extract(max_params=700)
    >>> sum(p.numel() for p in small.module_.parameters()) <= 700
    True
    >>> small.predict(X[:3] / 16).shape
    (3,)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit"])],
        "widths": [list, tuple],
        "depths": [list, tuple],
        "n_epochs_full": [Interval(Integral, 1, None, closed="left")],
        "n_epochs_stage": [Interval(Integral, 0, None, closed="left")],
        "distillation": [Interval(Real, 0, None, closed="left")],
        "sandwich": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "max_subnets": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator, *, widths=(16, 32, 64, 128, 256), depths=(1, 2),
                 n_epochs_full=20, n_epochs_stage=8, distillation=1.0, sandwich=True,
                 batch_size=32,
                 learning_rate=3e-3, validation_fraction=0.2, max_subnets=400,
                 random_state=None, verbose=0):
        self.estimator = estimator
        self.widths = widths
        self.depths = depths
        self.n_epochs_full = n_epochs_full
        self.n_epochs_stage = n_epochs_stage
        self.distillation = distillation
        self.sandwich = sandwich
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.max_subnets = max_subnets
        self.random_state = random_state
        self.verbose = verbose

    # -- training -----------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Train the supernet by progressive shrinking and score its subnets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self : object
        """
        name = type(self).__name__
        check_family(self.estimator, name)
        check_plain_mlp(self.estimator, name)
        widths = check_widths(self.widths, name)
        depths = check_widths(self.depths, name, "depths")
        rng = check_random_state(self.random_state)
        template = clone(self.estimator)
        if template.random_state is None:
            template.set_params(random_state=int(rng.randint(np.iinfo(np.int32).max)))
        start = time.perf_counter()
        task = SupernetTask(template, X, y)
        train, valid = task.split(self.validation_fraction, rng)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(seed)
        activation = template.activation
        net = task.new_supernet(depths[-1], widths[-1], [activation], seed)
        self._task, self._template, self._valid = task, template, valid
        self.history_ = []
        teacher = None
        for stage, (stage_depths, stage_widths) in enumerate(_stages(depths, widths)):
            n_epochs = self.n_epochs_full if stage == 0 else self.n_epochs_stage
            optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            net.train()
            for epoch in range(n_epochs):
                losses = []
                for batch in batches(train, self.batch_size, generator):
                    depth = stage_depths[_draw(len(stage_depths), generator)]
                    choices = [stage_widths[_draw(len(stage_widths), generator)]
                               for _ in range(depth)]
                    inputs, targets = task.X[batch], task.targets[batch]
                    output = net.forward_discrete(inputs, choices, activation)
                    loss = task.loss(output, targets)
                    if teacher is not None and self.distillation:
                        with torch.no_grad():
                            soft = teacher(inputs)
                        loss = loss + self.distillation * _distill(task, output, soft)
                    if stage and self.sandwich:
                        # The largest subnet trains at every step too, so the
                        # shrinking stages do not wear it down.
                        largest = net.forward_discrete(
                            inputs, [widths[-1]] * depths[-1], activation)
                        loss = loss + task.loss(largest, targets)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                record = {"stage": stage, "epoch": len(self.history_) + 1,
                          "train_loss": float(np.mean(losses))}
                with torch.no_grad():
                    for label, d, w in [("largest", depths[-1], widths[-1]),
                                        ("smallest", depths[0], widths[0])]:
                        out = net.forward_discrete(task.X[valid], [w] * d, activation)
                        record[f"valid_score_{label}"] = task.score(out, task.targets[valid])
                self.history_.append(record)
                if self.verbose:
                    print(f"[{name}] stage {stage} epoch {record['epoch']}: {record}")
            if stage == 0:
                teacher = copy.deepcopy(net).eval()
                for p in teacher.parameters():
                    p.requires_grad_(False)
        net.eval()
        self.supernet_ = net
        self.subnets_ = self._score_subnets(net, task, valid, depths, widths, activation, rng)
        best = int(np.lexsort((self.subnets_["n_params"], -self.subnets_["valid_score"]))[0])
        self.best_estimator_ = extract_mlp(
            template, task, net, list(self.subnets_["hidden_layer_sizes"][best]), activation)
        self.n_features_in_ = task.n_features
        self.fit_time_ = time.perf_counter() - start
        del self._valid
        return self

    def _score_subnets(self, net, task, valid, depths, widths, activation, rng):
        space = [sizes for d in depths for sizes in itertools.product(widths, repeat=d)]
        if len(space) > self.max_subnets:
            keep = rng.choice(np.arange(1, len(space) - 1), self.max_subnets - 2,
                              replace=False)
            space = [space[0], *[space[i] for i in sorted(keep)], space[-1]]
        scores = []
        with torch.no_grad():
            X_valid, y_valid = task.X[valid], task.targets[valid]
            for sizes in space:
                scores.append(task.score(net.forward_discrete(X_valid, list(sizes), activation),
                                         y_valid))
        column = np.empty(len(space), dtype=object)
        column[:] = space
        return {
            "hidden_layer_sizes": column,
            "n_params": np.array([n_parameters(task.n_features, s, task.n_outputs)
                                  for s in space]),
            "valid_score": np.array(scores),
        }

    # -- extraction ---------------------------------------------------------

    def extract(self, max_params=None, max_latency=None, *, hidden_layer_sizes=None):
        """A fitted estimator: the best subnet within the budget, not retrained.

        Subnets are tried in order of validation score (fewer parameters
        first on ties); the first within ``max_params`` whose measured
        latency is within ``max_latency`` is returned.

        Parameters
        ----------
        max_params : int or None, default=None
            Most weights and biases allowed.
        max_latency : float or None, default=None
            Most milliseconds allowed for one ``predict`` of 64 rows on this
            machine (best of 5 runs).
        hidden_layer_sizes : tuple of int or None, default=None
            Extract this subnet instead of searching (widths from
            ``widths``, at most ``max(depths)`` layers).

        Returns
        -------
        estimator : MLPClassifier or MLPRegressor
            Fitted; its ``module_`` holds the supernet's sliced weights.
        """
        check_is_fitted(self, "supernet_")
        if hidden_layer_sizes is not None:
            sizes = tuple(int(w) for w in hidden_layer_sizes)
            allowed = check_widths(self.widths, type(self).__name__)
            if (not sizes or len(sizes) > len(self.supernet_.hidden)
                    or any(w not in allowed for w in sizes)):
                raise ValueError(
                    f"hidden_layer_sizes={hidden_layer_sizes!r} is not a subnet: use 1 to "
                    f"{len(self.supernet_.hidden)} widths from {allowed}."
                )
            return self._extract(sizes)
        subnets = self.subnets_
        order = np.lexsort((subnets["n_params"], -subnets["valid_score"]))
        if max_params is not None:
            order = [i for i in order if subnets["n_params"][i] <= max_params]
            if not order:
                raise ValueError(
                    f"No subnet has at most max_params={max_params} parameters; the "
                    f"smallest has {int(subnets['n_params'].min())}. Raise max_params or "
                    "add smaller widths."
                )
        fastest = np.inf
        for i in order:
            est = self._extract(subnets["hidden_layer_sizes"][i])
            if max_latency is None:
                return est
            latency = _latency_ms(est, self._task.X[:64].numpy())
            fastest = min(fastest, latency)
            if latency <= max_latency:
                return est
        raise ValueError(
            f"No subnet within the budget predicts 64 rows in max_latency={max_latency} ms "
            f"on this machine; the fastest took {fastest:.3f} ms. Raise max_latency."
        )

    def _extract(self, sizes):
        return extract_mlp(self._template, self._task, self.supernet_, list(sizes),
                           self._template.activation)

    def accuracy_vs_size(self, X, y, X_test, y_test, *, hidden_layer_sizes=None):
        """Extracted subnets beside the same architectures trained alone.

        Parameters
        ----------
        X, y : array-like
            The data the supernet was fitted on (the standalone networks
            train on it with the estimator's own ``fit``).
        X_test, y_test : array-like
            Where both are scored.
        hidden_layer_sizes : list of tuple or None, default=None
            Architectures to compare; None takes the validation Pareto
            front of :attr:`subnets_` (no smaller subnet scores as well),
            at most 6 of it, spread over sizes.

        Returns
        -------
        records : dict of ndarray
            ``hidden_layer_sizes``, ``n_params``, ``extracted_score``,
            ``standalone_score`` (``estimator.score`` on ``X_test``) and
            ``standalone_fit_time`` (seconds).
        """
        check_is_fitted(self, "supernet_")
        if hidden_layer_sizes is None:
            hidden_layer_sizes = self._pareto_front(6)
        records = {k: [] for k in ("hidden_layer_sizes", "n_params", "extracted_score",
                                   "standalone_score", "standalone_fit_time")}
        for sizes in hidden_layer_sizes:
            extracted = self.extract(hidden_layer_sizes=sizes)
            alone = clone(self._template).set_params(hidden_layer_sizes=tuple(sizes))
            start = time.perf_counter()
            alone.fit(X, y)
            records["standalone_fit_time"].append(time.perf_counter() - start)
            records["hidden_layer_sizes"].append(tuple(sizes))
            records["n_params"].append(
                n_parameters(self._task.n_features, sizes, self._task.n_outputs))
            records["extracted_score"].append(float(extracted.score(X_test, y_test)))
            records["standalone_score"].append(float(alone.score(X_test, y_test)))
        out = {k: np.array(v, dtype=float) for k, v in records.items()
               if k != "hidden_layer_sizes"}
        column = np.empty(len(records["hidden_layer_sizes"]), dtype=object)
        column[:] = records["hidden_layer_sizes"]
        return {"hidden_layer_sizes": column, **out}

    def _pareto_front(self, n_points):
        subnets = self.subnets_
        order = np.lexsort((-subnets["valid_score"], subnets["n_params"]))
        front, best = [], -np.inf
        for i in order:
            if subnets["valid_score"][i] > best:
                front.append(i)
                best = subnets["valid_score"][i]
        if len(front) > n_points:
            front = [front[j] for j in np.linspace(0, len(front) - 1, n_points).round()
                     .astype(int)]
        return [subnets["hidden_layer_sizes"][i] for i in front]

    # -- delegation ---------------------------------------------------------

    def predict(self, X):
        """Predictions of :attr:`best_estimator_`."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    def score(self, X, y):
        """``best_estimator_.score(X, y)``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.score(X, y)


def _stages(depths, widths):
    """Progressive shrinking: ``(depth choices, width choices)`` per stage."""
    stages = [([depths[-1]], [widths[-1]])]
    for k in range(2, len(depths) + 1):
        stages.append((depths[-k:], [widths[-1]]))
    for k in range(2, len(widths) + 1):
        stages.append((depths, widths[-k:]))
    return stages


def _draw(n, generator):
    return int(torch.randint(n, (1,), generator=generator))


def _distill(task, output, teacher_output):
    """Distillation loss towards the largest network's output."""
    if task.is_classifier and task.targets.ndim == 1:
        return F.kl_div(F.log_softmax(output, 1), F.softmax(teacher_output, 1),
                        reduction="batchmean")
    if task.is_classifier:
        return F.binary_cross_entropy_with_logits(output, torch.sigmoid(teacher_output))
    return 0.5 * F.mse_loss(output, teacher_output)


def _latency_ms(estimator, X):
    estimator.predict(X)  # warm up (builds the prediction plan)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        estimator.predict(X)
        times.append(time.perf_counter() - start)
    return 1000 * min(times)
