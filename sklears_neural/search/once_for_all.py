"""OnceForAllNetwork: train one elastic MLP or CNN, then extract subnets that
meet a budget without retraining (Cai et al., 2020, "Once-for-All")."""

import copy
import itertools
import re
import time
import warnings
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import HasMethods, Interval, _fit_context
from sklears_neural.nn.supernet import (
    SuperCNN,
    SupernetTask,
    batches,
    check_family,
    check_plain_mlp,
    check_widths,
    cnn_layers,
    extract_cnn,
    extract_mlp,
    n_parameters,
)

__all__ = ["OnceForAllNetwork"]


class OnceForAllNetwork(MetaEstimatorMixin, BaseEstimator):
    """One elastic MLP or CNN trained once; fitted subnets extracted to a budget.

    MLPs: the supernet (:class:`~sklears_neural.nn.supernet.SuperMLP`)
    has ``max(depths)`` hidden layers of ``max(widths)`` units. A subnet
    keeps the first ``d`` layers (``d`` in ``depths``) and the first
    ``w_i`` units of layer ``i`` (``w_i`` in ``widths``), so it is a slice
    of the supernet's weights. CNNs: the supernet
    (:class:`~sklears_neural.nn.supernet.SuperCNN` with elastic kernels)
    has ``max(depths)`` "same" convolutions of ``max(widths)`` channels and
    ``max(kernel_sizes)`` wide kernels, then global average pooling and a
    linear layer; a subnet keeps the first ``d`` convolutions, the first
    ``c_i`` channels of each and a kernel size ``k_i`` per convolution: the
    centre of the largest kernel times a learned kernel transformation
    matrix (the paper's elastic kernel).

    Training follows progressive shrinking: the largest network first
    (``n_epochs_full`` epochs), then stages of ``n_epochs_stage`` epochs
    that each let one more kernel size (CNNs), then one more depth, then
    one more width be sampled (each batch trains one subnet drawn from the
    stage's choices), with knowledge distillation from a frozen copy of
    the largest network. :meth:`extract` copies the slice of the best
    subnet under a parameter or latency budget into an ordinary fitted
    ``estimator``, without retraining; ``fine_tune`` optionally continues
    it with the estimator's own ``fit`` (the paper reports both).

    Ranking (classifiers): a validation accuracy on a few hundred rows
    cannot tell apart subnets a standard error apart, so among the subnets
    within one standard error, ``sqrt(a (1 - a) / n_valid)``, of the best
    accuracy ``a`` the one with the lowest validation loss wins (the
    one-standard-error rule, with the estimator's loss as the finer
    criterion). Regressors rank by R^2, then loss.

    Other estimators are refused with a ``ValueError``; the searchers that
    train every candidate (``EvolutionarySearch``, ``ProgressiveSearch``,
    ``HyperbandSearch``) take any family.

    Parameters
    ----------
    estimator : MLPClassifier, MLPRegressor, CNNClassifier or CNNRegressor
        The estimator extracted subnets become (its activation is the
        supernet's; its other parameters are kept, so extracted ones can
        continue training with ``warm_start``). MLPs: plain layers only
        (``batch_norm``, ``layer_norm``, ``residual``, ``noise`` and
        ``spectral_norm`` must be off). CNNs: ``layers`` and ``batch_norm``
        are replaced by the subnet's, convolutions without batch norm
        (``"conv16-k5-nobn"``) then ``"gap"``.
    widths : list of int or None, default=None
        Elastic widths of each hidden layer (channels of each convolution
        for CNNs). None: (16, 32, 64, 128, 256) for MLPs, (8, 16, 32) for
        CNNs.
    depths : list of int, default=(1, 2)
        Elastic numbers of hidden (convolution) layers.
    kernel_sizes : list of int, default=(3, 5)
        Elastic odd kernel sizes of CNNs.
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
    fine_tune : int, default=0
        Epochs, at most, that :attr:`best_estimator_` continues training
        after extraction: the estimator's own ``fit`` with
        ``warm_start=True`` and ``max_iter=fine_tune`` on all of ``X``
        (the validation part included), so its own optimizer settings
        and stopping rule (``tol``, ``n_iter_no_change``) apply. 0: the
        extracted subnet as it is, not retrained. :meth:`extract` takes
        its own ``fine_tune`` (0 by default).
    random_state : int, RandomState or None, default=None
        Seeds the split, the initialization and the subnet draws.
    verbose : int, default=0

    Attributes
    ----------
    supernet_ : SuperMLP or SuperCNN
        The trained supernet.
    subnets_ : dict of ndarray
        One entry per scored subnet: ``hidden_layer_sizes`` (tuples; MLPs)
        or ``layers`` (lists of strings; CNNs), ``n_params``,
        ``valid_score`` (accuracy or R^2 on the held-out part, with the
        supernet's weights) and ``valid_loss`` (the estimator's mean loss
        there); ``pandas.DataFrame`` reads it.
    history_ : list of dict
        Per epoch: ``stage``, ``epoch``, ``train_loss``, ``valid_score``
        of the largest and of the smallest subnet.
    best_estimator_ : estimator
        The first subnet of the ranking, extracted, then fine-tuned for
        at most ``fine_tune`` epochs (:meth:`predict` and :meth:`score`
        use it).
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
        "widths": [list, tuple, None],
        "depths": [list, tuple],
        "kernel_sizes": [list, tuple],
        "n_epochs_full": [Interval(Integral, 1, None, closed="left")],
        "n_epochs_stage": [Interval(Integral, 0, None, closed="left")],
        "distillation": [Interval(Real, 0, None, closed="left")],
        "sandwich": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "max_subnets": [Interval(Integral, 2, None, closed="left")],
        "fine_tune": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator, *, widths=None, depths=(1, 2), kernel_sizes=(3, 5),
                 n_epochs_full=20, n_epochs_stage=8, distillation=1.0, sandwich=True,
                 batch_size=32,
                 learning_rate=3e-3, validation_fraction=0.2, max_subnets=400,
                 fine_tune=0, random_state=None, verbose=0):
        self.estimator = estimator
        self.widths = widths
        self.depths = depths
        self.kernel_sizes = kernel_sizes
        self.n_epochs_full = n_epochs_full
        self.n_epochs_stage = n_epochs_stage
        self.distillation = distillation
        self.sandwich = sandwich
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.max_subnets = max_subnets
        self.fine_tune = fine_tune
        self.random_state = random_state
        self.verbose = verbose

    # -- training -----------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Train the supernet by progressive shrinking and score its subnets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *input_shape)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self : object
        """
        name = type(self).__name__
        family = check_family(self.estimator, name, ("mlp", "cnn"))
        if family == "mlp":
            check_plain_mlp(self.estimator, name)
        default_widths = _DEFAULT_WIDTHS[family]
        widths = check_widths(
            default_widths if self.widths is None else self.widths, name)
        depths = check_widths(self.depths, name, "depths")
        kernels = (check_widths(self.kernel_sizes, name, "kernel_sizes")
                   if family == "cnn" else [None])
        rng = check_random_state(self.random_state)
        template = clone(self.estimator)
        if template.random_state is None:
            template.set_params(random_state=int(rng.randint(np.iinfo(np.int32).max)))
        start = time.perf_counter()
        task = SupernetTask(template, X, y)
        train, valid = task.split(self.validation_fraction, rng)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(seed)
        space_class = _MLPSpace if family == "mlp" else _CNNSpace
        space = space_class(template, task, depths, widths, kernels)
        net = space.new_supernet(seed)
        largest = space.largest()
        self._task, self._template, self._space = task, template, space
        self._n_valid = len(valid)
        self.history_ = []
        teacher = None
        for stage, choices in enumerate(_stages(depths, widths, kernels)):
            n_epochs = self.n_epochs_full if stage == 0 else self.n_epochs_stage
            optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            net.train()
            for epoch in range(n_epochs):
                losses = []
                for batch in batches(train, self.batch_size, generator):
                    arch = _sample(choices, generator)
                    inputs, targets = task.X[batch], task.targets[batch]
                    output = space.forward(net, inputs, arch)
                    loss = task.loss(output, targets)
                    if teacher is not None and self.distillation:
                        with torch.no_grad():
                            soft = teacher(inputs)
                        loss = loss + self.distillation * _distill(task, output, soft)
                    if stage and self.sandwich:
                        # The largest subnet trains at every step too, so the
                        # shrinking stages do not wear it down.
                        top = space.forward(net, inputs, largest)
                        loss = loss + task.loss(top, targets)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                record = {"stage": stage, "epoch": len(self.history_) + 1,
                          "train_loss": float(np.mean(losses))}
                with torch.no_grad():
                    for label, arch in [("largest", largest),
                                        ("smallest", space.smallest())]:
                        out = space.forward(net, task.X[valid], arch)
                        record[f"valid_score_{label}"] = task.score(
                            out, task.targets[valid])
                self.history_.append(record)
                if self.verbose:
                    print(f"[{name}] stage {stage} epoch {record['epoch']}: {record}")
            if stage == 0:
                teacher = copy.deepcopy(net).eval()
                for p in teacher.parameters():
                    p.requires_grad_(False)
        net.eval()
        self.supernet_ = net
        self._archs = space.subnets(self.max_subnets, rng)
        scores, losses = [], []
        with torch.no_grad():
            for arch in self._archs:
                out = space.forward(net, task.X[valid], arch)
                scores.append(task.score(out, task.targets[valid]))
                losses.append(float(task.loss(out, task.targets[valid])))
        self.subnets_ = {
            space.key: _column([space.describe(a) for a in self._archs]),
            "n_params": np.array([space.n_params(a) for a in self._archs]),
            "valid_score": np.array(scores),
            "valid_loss": np.array(losses),
        }
        best = self._ranking(np.arange(len(self._archs)))[0]
        # Fine-tuning continues on the data as given (the estimator
        # validates it again).
        self.best_estimator_ = self._fine_tuned(
            space.extract(net, self._archs[best]), self.fine_tune, X, y)
        self.n_features_in_ = task.shell.n_features_in_
        self.fit_time_ = time.perf_counter() - start
        return self

    # -- extraction ---------------------------------------------------------

    def extract(self, max_params=None, max_latency=None, *, hidden_layer_sizes=None,
                layers=None, fine_tune=0, X=None, y=None):
        """A fitted estimator: the best subnet within the budget, not retrained.

        The subnets within ``max_params`` are ranked as for
        :attr:`best_estimator_` (classifiers: those within one standard
        error of the best validation accuracy first, by validation loss,
        then the others by accuracy; fewer parameters first on ties); the
        first whose measured latency is within ``max_latency`` is returned.

        Parameters
        ----------
        max_params : int or None, default=None
            Most weights and biases allowed.
        max_latency : float or None, default=None
            Most milliseconds allowed for one ``predict`` of 64 rows on this
            machine (best of 5 runs).
        hidden_layer_sizes : tuple of int or None, default=None
            MLPs: extract this subnet instead of searching (widths from
            ``widths``, at most ``max(depths)`` layers).
        layers : list of str or None, default=None
            CNNs: extract this subnet instead of searching, written as in
            :attr:`subnets_` (``["conv16-k3-nobn", "conv8-k5-nobn",
            "gap"]``; ``-nobn`` and ``"gap"`` may be left out).
        fine_tune : int, default=0
            0: the supernet's slice as it is (``n_iter_ == 0``). Otherwise
            at most this many epochs of the estimator's own ``fit``
            (``warm_start=True``, ``max_iter=fine_tune``) on ``X, y``
            (pass the data :meth:`fit` saw: the validation part is then
            trained on too; the searcher keeps no copy of it); the
            estimator's stopping rule may end it sooner (``n_iter_`` says
            how many ran), and its ``warm_start`` and ``max_iter`` are
            set back afterwards. Digits (doc/nas.md): 10 epochs take the
            best subnet from 0.973 to 0.977, as the default MLP.

        Returns
        -------
        estimator : MLPClassifier, MLPRegressor, CNNClassifier or CNNRegressor
            Fitted; its ``module_`` holds the supernet's sliced weights
            (fine-tuned, with ``fine_tune``).
        """
        check_is_fitted(self, "supernet_")
        if (not isinstance(fine_tune, Integral) or isinstance(fine_tune, bool)
                or fine_tune < 0):
            raise ValueError(
                f"fine_tune must be an int >= 0 (epochs; 0: not retrained), got "
                f"{fine_tune!r}."
            )
        if fine_tune and (X is None or y is None):
            raise ValueError(
                f"fine_tune={fine_tune} continues training the subnet: pass the "
                "training data, extract(..., fine_tune=n, X=X_train, y=y_train)."
            )
        space = self._space
        given = hidden_layer_sizes if space.key == "hidden_layer_sizes" else layers
        other = layers if space.key == "hidden_layer_sizes" else hidden_layer_sizes
        if other is not None:
            wrong = ("layers" if space.key == "hidden_layer_sizes"
                     else "hidden_layer_sizes")
            raise ValueError(
                f"This {type(self).__name__} holds a {space.family.upper()} supernet: "
                f"name a subnet with {space.key}=..., not {wrong}."
            )
        if given is not None:
            arch = space.parse(given, type(self).__name__)
            return self._fine_tuned(space.extract(self.supernet_, arch), fine_tune,
                                    X, y)
        subnets = self.subnets_
        rows = np.arange(len(self._archs))
        if max_params is not None:
            rows = rows[subnets["n_params"] <= max_params]
            if not len(rows):
                raise ValueError(
                    f"No subnet has at most max_params={max_params} parameters; the "
                    f"smallest has {int(subnets['n_params'].min())}. Raise max_params or "
                    "add smaller widths."
                )
        fastest = np.inf
        for i in self._ranking(rows):
            est = space.extract(self.supernet_, self._archs[i])
            if max_latency is not None:
                latency = _latency_ms(est, self._task.X[:64].numpy())
                fastest = min(fastest, latency)
            if max_latency is None or latency <= max_latency:
                return self._fine_tuned(est, fine_tune, X, y)
        raise ValueError(
            f"No subnet within the budget predicts 64 rows in max_latency={max_latency} ms "
            f"on this machine; the fastest took {fastest:.3f} ms. Raise max_latency."
        )

    def accuracy_vs_size(self, X, y, X_test, y_test, *, hidden_layer_sizes=None,
                         layers=None, fine_tune=0):
        """Extracted subnets beside the same architectures trained alone.

        Parameters
        ----------
        X, y : array-like
            The data the supernet was fitted on (the standalone networks
            train on it with the estimator's own ``fit``).
        X_test, y_test : array-like
            Where both are scored.
        hidden_layer_sizes : list of tuple or None, default=None
            MLP architectures to compare.
        layers : list of list of str or None, default=None
            CNN architectures to compare (as :meth:`extract` takes them).
            With neither, the validation Pareto front of :attr:`subnets_`
            (no smaller subnet scores as well), at most 6 of it, spread
            over sizes.
        fine_tune : int, default=0
            Also score each extracted subnet after at most this many epochs
            of its own ``fit`` on ``X, y`` (warm start, as :meth:`extract`
            fine-tunes).

        Returns
        -------
        records : dict of ndarray
            ``hidden_layer_sizes`` (MLPs) or ``layers`` (CNNs),
            ``n_params``, ``extracted_score``, ``fine_tuned_score`` (NaN
            with ``fine_tune=0``), ``standalone_score``
            (``estimator.score`` on ``X_test``) and ``standalone_fit_time``
            (seconds).
        """
        check_is_fitted(self, "supernet_")
        space = self._space
        given = hidden_layer_sizes if space.key == "hidden_layer_sizes" else layers
        if given is None:
            archs = self._pareto_front(6)
        else:
            archs = [space.parse(a, type(self).__name__) for a in given]
        records = {k: [] for k in (space.key, "n_params", "extracted_score",
                                   "fine_tuned_score", "standalone_score",
                                   "standalone_fit_time")}
        for arch in archs:
            extracted = space.extract(self.supernet_, arch)
            alone = clone(self._template).set_params(**space.params(arch))
            start = time.perf_counter()
            alone.fit(X, y)
            records["standalone_fit_time"].append(time.perf_counter() - start)
            records[space.key].append(space.describe(arch))
            records["n_params"].append(space.n_params(arch))
            records["extracted_score"].append(float(extracted.score(X_test, y_test)))
            tuned = (self._fine_tuned(extracted, fine_tune, X, y).score(X_test, y_test)
                     if fine_tune else np.nan)
            records["fine_tuned_score"].append(float(tuned))
            records["standalone_score"].append(float(alone.score(X_test, y_test)))
        out = {k: np.array(v, dtype=float) for k, v in records.items()
               if k != space.key}
        return {space.key: _column(records[space.key]), **out}

    def _ranking(self, rows):
        """``rows`` (of :attr:`subnets_`), best first: for classifiers those
        within one standard error of the best validation accuracy, by
        validation loss, then the others by accuracy; fewer parameters
        first on ties."""
        subnets = self.subnets_
        score = subnets["valid_score"][rows]
        loss = subnets["valid_loss"][rows]
        best = score.max()
        # The standard error of an accuracy measured on n_valid rows; R^2
        # has no such simple one, and for one output it ranks as the loss.
        margin = (np.sqrt(best * (1 - best) / self._n_valid)
                  if self._task.is_classifier else 0.0)
        near = score >= best - margin
        order = np.lexsort((subnets["n_params"][rows], loss,
                            np.where(near, 0.0, -score), ~near))
        return [int(i) for i in np.asarray(rows)[order]]

    @staticmethod
    def _fine_tuned(estimator, n_epochs, X, y):
        """``estimator`` after at most ``n_epochs`` of its own ``fit``,
        warm-started on ``X, y``; its ``warm_start`` and ``max_iter`` set
        back."""
        if not n_epochs:
            return estimator
        kept = {k: getattr(estimator, k) for k in ("warm_start", "max_iter")}
        with warnings.catch_warnings():
            # Stopping at max_iter is the asked-for budget, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.set_params(warm_start=True, max_iter=n_epochs).fit(X, y)
        return estimator.set_params(**kept)

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
        return [self._archs[i] for i in front]

    # -- delegation ---------------------------------------------------------

    def predict(self, X):
        """Predictions of :attr:`best_estimator_`."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    def score(self, X, y):
        """``best_estimator_.score(X, y)``."""
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.score(X, y)


def _stages(depths, widths, kernels):
    """Progressive shrinking: the choices ``(depths, widths, kernels)`` open
    in each stage. The largest network, then one more kernel size at a
    time (CNNs), then depth, then width (Cai et al., 2020, section 3.2)."""
    stages = [([depths[-1]], [widths[-1]], [kernels[-1]])]
    for k in range(2, len(kernels) + 1):
        stages.append(([depths[-1]], [widths[-1]], kernels[-k:]))
    for k in range(2, len(depths) + 1):
        stages.append((depths[-k:], [widths[-1]], kernels))
    for k in range(2, len(widths) + 1):
        stages.append((depths, widths[-k:], kernels))
    return stages


def _sample(choices, generator):
    """One architecture of a stage: ``((width, kernel), ...)`` per layer."""
    depths, widths, kernels = choices
    depth = depths[_draw(len(depths), generator)]
    arch = []
    for _ in range(depth):
        width = widths[_draw(len(widths), generator)]
        # No draw for MLPs (one "kernel"): their subnets are drawn as before
        # CNNs were supported, so seeded MLP results did not change.
        kernel = (kernels[_draw(len(kernels), generator)] if len(kernels) > 1
                  else kernels[0])
        arch.append((width, kernel))
    return tuple(arch)


def _column(values):
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


#: Default elastic widths per family (None in ``widths``): CNN channels
#: cost far more per unit on images than MLP units on rows.
_DEFAULT_WIDTHS = {"mlp": (16, 32, 64, 128, 256), "cnn": (8, 16, 32)}


class _MLPSpace:
    """Subnets of a :class:`SuperMLP`: ``((width, None), ...)`` per layer."""

    family, key = "mlp", "hidden_layer_sizes"

    def __init__(self, template, task, depths, widths, kernels):
        self.template, self.task = template, task
        self.depths, self.widths, self.kernels = depths, widths, kernels
        self.activation = template.activation

    def new_supernet(self, seed):
        return self.task.new_supernet(self.depths[-1], self.widths[-1],
                                      [self.activation], seed)

    def largest(self):
        return ((self.widths[-1], self.kernels[-1]),) * self.depths[-1]

    def smallest(self):
        return ((self.widths[0], self.kernels[0]),) * self.depths[0]

    def subnets(self, max_subnets, rng):
        """Every subnet, or ``max_subnets`` of them keeping the first and last."""
        per_layer = list(itertools.product(self.widths, self.kernels))
        space = [arch for d in self.depths
                 for arch in itertools.product(per_layer, repeat=d)]
        if len(space) > max_subnets:
            keep = rng.choice(np.arange(1, len(space) - 1), max_subnets - 2,
                              replace=False)
            space = [space[0], *[space[i] for i in sorted(keep)], space[-1]]
        return space

    def forward(self, net, x, arch):
        return net.forward_discrete(x, [w for w, _ in arch], self.activation)

    def describe(self, arch):
        return tuple(w for w, _ in arch)

    def params(self, arch):
        return {"hidden_layer_sizes": self.describe(arch)}

    def n_params(self, arch):
        return n_parameters(self.task.n_features, self.describe(arch),
                            self.task.n_outputs)

    def extract(self, net, arch):
        return extract_mlp(self.template, self.task, net, [w for w, _ in arch],
                           self.activation)

    def parse(self, sizes, owner):
        sizes = tuple(int(w) for w in sizes)
        if (not sizes or len(sizes) > self.depths[-1]
                or any(w not in self.widths for w in sizes)):
            raise ValueError(
                f"hidden_layer_sizes={sizes!r} is not a subnet: use 1 to "
                f"{self.depths[-1]} widths from {self.widths}."
            )
        return tuple((w, None) for w in sizes)


class _CNNSpace(_MLPSpace):
    """Subnets of an elastic-kernel :class:`SuperCNN`: ``((channels,
    kernel size), ...)`` per convolution."""

    family, key = "cnn", "layers"

    def new_supernet(self, seed):
        net = SuperCNN(list(self.task.shell.input_shape_), self.task.n_outputs,
                       self.depths[-1], self.widths[-1], self.kernels, self.activation,
                       elastic_kernel=True)
        net.reset_parameters(generator=torch.Generator().manual_seed(int(seed)))
        return net

    def forward(self, net, x, arch):
        return net.forward_discrete(x, [c for c, _ in arch],
                                    [self.kernels.index(k) for _, k in arch])

    def describe(self, arch):
        return cnn_layers([c for c, _ in arch], [k for _, k in arch], batch_norm=False)

    def params(self, arch):
        return {"layers": self.describe(arch)}

    def n_params(self, arch):
        shape = self.task.shell.input_shape_
        channels = [shape[0]] + [c for c, _ in arch]
        kernels = [k for _, k in arch]
        # (in * k^ndim + 1) * out weights and biases per convolution.
        convs = sum((a * k ** (len(shape) - 1) + 1) * b
                    for a, b, k in zip(channels[:-1], channels[1:], kernels))
        return int(convs + (channels[-1] + 1) * self.task.n_outputs)

    def extract(self, net, arch):
        return extract_cnn(self.template, self.task, net, [c for c, _ in arch],
                           [self.kernels.index(k) for _, k in arch])

    def parse(self, layers, owner):
        arch = []
        for item in layers:
            if str(item).lower() == "gap":
                continue
            match = re.fullmatch(r"conv(\d+)-k(\d+)(-nobn)?", str(item).lower())
            if (match is None or int(match[1]) not in self.widths
                    or int(match[2]) not in self.kernels):
                arch = None
                break
            arch.append((int(match[1]), int(match[2])))
        if not arch or len(arch) > self.depths[-1]:
            raise ValueError(
                f"layers={layers!r} is not a subnet: use 1 to {self.depths[-1]} items "
                f"'conv<c>-k<k>' with c from {self.widths} and k from {self.kernels}, "
                "then 'gap'."
            )
        return tuple(arch)


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
