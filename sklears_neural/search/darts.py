"""DARTSSearch: differentiable architecture search (Liu, Simonyan and Yang, 2019)
over MLP layer stacks, then discretize and retrain."""

import time
from numbers import Integral, Real

import numpy as np
import torch

from sklears_neural.core._compat import Interval, StrOptions
from sklears_neural.nn.supernet import (
    SKIP,
    SuperCNN,
    batches,
    check_family,
    check_widths,
    cnn_layers,
    discrete_sizes,
    shortlist_with_estimator,
)
from sklears_neural.search._base import BaseSearch, SupernetSearchMixin

__all__ = ["DARTSSearch"]


class DARTSSearch(SupernetSearchMixin, BaseSearch):
    """Differentiable architecture search for MLPs and CNNs: mixed layers, bilevel updates.

    MLPs: a supernet of ``max_layers`` hidden layers holds, at each layer,
    a mixed operation over the candidate widths (slices of one max-width
    linear map, see :class:`~sklears_neural.nn.supernet.MixedLayer`) and,
    after the first layer, skip (the layer removed); one more mixture over
    ``activations`` is shared by all layers, as an MLP has one hidden
    activation. CNNs: ``max_layers`` "same" convolutions, each a mixture
    over channel counts (``widths``, plus skip after the first) and one
    over ``kernel_sizes`` (:class:`~sklears_neural.nn.supernet.MixedConv`),
    then global average pooling; the activation is the estimator's.

    Architecture weights ``alpha`` (a softmax per mixture) and network
    weights ``w`` are trained in turn on two parts of ``X``: ``w`` on the
    training part, ``alpha`` on the validation part, by the first-order
    rule (``alpha`` follows the validation gradient at the current ``w``)
    or the second-order one (the gradient after one virtual SGD step on
    ``w``, its Hessian-vector product by finite differences). Then each
    mixture is discretized to its largest weight (skip removes the
    layer), giving ``hidden_layer_sizes`` and ``activation`` (MLP) or
    ``layers`` such as ``["conv64-k5", "conv32-k3", "gap"]`` (CNN); that
    architecture is set on a clone of ``estimator``, cross-validated (with,
    by default, ``estimator``'s own architecture beside it) and the best
    refit, so ``best_estimator_`` is an ordinary fitted estimator of the
    family.

    Parameters
    ----------
    estimator : MLPClassifier, MLPRegressor, CNNClassifier or CNNRegressor
        The estimator whose architecture is searched; its other parameters
        (solver, ``max_iter``, ...) train the discretized network.
    widths : list of int, default=(32, 64, 128)
        Candidate widths of each hidden layer (channels of each
        convolution for CNNs).
    max_layers : int, default=2
        Hidden (convolution) layers of the supernet; skip choices make
        shallower nets.
    activations : list of str, default=("relu", "tanh", "gelu")
        Candidate hidden activations of MLPs (ones without parameters).
    kernel_sizes : list of int, default=(3, 5)
        Candidate odd kernel sizes of CNNs.
    order : {"first", "second"}, default="first"
        First-order DARTS, or second-order (unrolled) DARTS: about three
        times the cost per step.
    n_epochs : int, default=30
        Passes over the training part of the supernet search.
    batch_size : int, default=64
        Rows per step, on both parts.
    learning_rate : float, default=3e-3
        Adam step size of the network weights.
    arch_learning_rate : float, default=3e-3
        Adam step size of ``alpha`` (betas (0.5, 0.999), as in the paper).
    arch_weight_decay : float, default=1e-3
        L2 penalty on ``alpha``.
    unrolled_learning_rate : float or None, default=None
        Step size ``xi`` of the virtual step in second-order DARTS; None
        uses ``learning_rate``.
    validation_fraction : float, default=0.5
        Share of ``X`` that trains ``alpha`` (the paper halves its data).
    n_candidates : int, default=2
        Discretized architectures cross-validated: the most probable one
        (the largest weight of every mixture), then the next most probable
        by the product of the weights; the best cross-validated is refit.
    include_estimator : bool, default=True
        Also cross-validate ``estimator``'s own architecture
        (``hidden_layer_sizes`` and ``activation``, or ``layers``), so the
        refit model is the best in cross-validation of the discretized ones
        and the one the search started from; ``cv_results_["source"]`` says
        which is which.
    scoring, cv, n_jobs, pre_dispatch, refit, random_state, verbose, error_score
        See :class:`~sklears_neural.search.BaseSearch`; they apply to the
        cross-validation and refit of the discretized architecture.

    Attributes
    ----------
    architecture_weights_ : list of dict
        After each epoch: ``epoch``, ``layers`` (per layer, the softmax
        over ``widths`` and, after the first layer, skip last) and
        ``activation`` (MLP: the softmax over ``activations``) or
        ``kernels`` (CNN: per layer, the softmax over ``kernel_sizes``),
        plain floats.
    search_history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``,
        ``valid_score`` (accuracy or R^2 of the mixed supernet) and
        ``time`` (seconds since the search began).
    search_time_ : float
        Seconds spent in the supernet search (before cross-validation).
    supernet_ : SuperMLP or SuperCNN
        The trained supernet.
    cv_results_, best_estimator_, best_params_, best_architecture_, best_score_, \
best_index_, n_splits_, refit_time_, multimetric_, scorer_
        See :class:`~sklears_neural.search.BaseSearch`. ``best_params_``
        holds ``hidden_layer_sizes`` and ``activation`` (MLP) or
        ``layers`` (CNN); ``cv_results_``
        has a ``supernet_score`` column (each discretized architecture's
        validation score with the supernet's weights, before retraining;
        NaN for the estimator's own architecture) and a ``source`` column
        (``"search"`` or ``"estimator"``).

    Notes
    -----
    Second order: with ``w' = w - xi grad_w L_train(w, alpha)``, the
    architecture gradient is ``grad_alpha L_val(w', alpha) - xi
    (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) /
    (2 eps)``, ``w+- = w +- eps grad_w' L_val(w', alpha)``, ``eps = 0.01 /
    ||grad_w' L_val||`` (equation 8 of the paper). The virtual step is
    plain SGD; the real weight step is Adam (``torch.optim``, directly: the
    bilevel loop does not fit the core ``Trainer``'s one-objective step).
    A "zero" operation is not offered: in a chain of layers it would cut
    the input off; skip plays its part of making the net shallower.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.search.darts import DARTSSearch
    >>> X, y = load_digits(return_X_y=True)
    >>> search = DARTSSearch(MLPClassifier(max_iter=5), widths=(16, 32), n_epochs=2,
    ...                      cv=2, random_state=0).fit(X[:200] / 16, y[:200])
    >>> sorted(search.best_params_)
    ['activation', 'hidden_layer_sizes']
    >>> len(search.architecture_weights_)
    2
    """

    _parameter_constraints = {
        **BaseSearch._parameter_constraints,
        "widths": [list, tuple],
        "max_layers": [Interval(Integral, 1, None, closed="left")],
        "activations": [list, tuple],
        "kernel_sizes": [list, tuple],
        "order": [StrOptions({"first", "second"})],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "arch_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "arch_weight_decay": [Interval(Real, 0, None, closed="left")],
        "unrolled_learning_rate": [Interval(Real, 0, None, closed="neither"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "include_estimator": ["boolean"],
    }

    def __init__(self, estimator, *, widths=(32, 64, 128), max_layers=2,
                 activations=("relu", "tanh", "gelu"), kernel_sizes=(3, 5), order="first",
                 n_epochs=30,
                 batch_size=64, learning_rate=3e-3, arch_learning_rate=3e-3,
                 arch_weight_decay=1e-3, unrolled_learning_rate=None,
                 validation_fraction=0.5, n_candidates=2, include_estimator=True,
                 scoring=None, cv=3, n_jobs=None,
                 pre_dispatch="2*n_jobs", refit=True, random_state=None, verbose=0,
                 error_score=np.nan):
        super().__init__(
            estimator, scoring=scoring, cv=cv, n_jobs=n_jobs, pre_dispatch=pre_dispatch,
            refit=refit, random_state=random_state, verbose=verbose, error_score=error_score,
        )
        self.widths = widths
        self.max_layers = max_layers
        self.activations = activations
        self.kernel_sizes = kernel_sizes
        self.order = order
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.arch_learning_rate = arch_learning_rate
        self.arch_weight_decay = arch_weight_decay
        self.unrolled_learning_rate = unrolled_learning_rate
        self.validation_fraction = validation_fraction
        self.n_candidates = n_candidates
        self.include_estimator = include_estimator

    def fit(self, X, y=None, **fit_params):
        """Search the supernet, discretize, cross-validate and refit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        **fit_params
            Passed to the estimator's ``fit`` when training the
            discretized architecture.

        Returns
        -------
        self : object
        """
        check_family(self.estimator, type(self).__name__, ("mlp", "cnn"))
        return super().fit(X, y, **fit_params)

    def _run_search(self, evaluate, rng, context):
        name = type(self).__name__
        family, widths, task, (train, valid), seed = self._supernet_data(rng)
        generator = torch.Generator().manual_seed(seed)
        layer_alphas = [
            torch.zeros(len(widths) + (1 if i else 0), requires_grad=True)
            for i in range(self.max_layers)
        ]
        if family == "mlp":
            net = task.new_supernet(self.max_layers, widths[-1], self.activations, seed)
            options = net.activation_names
            # One activation mixture for all layers: an MLP has one activation.
            choice_alphas = [torch.zeros(len(options), requires_grad=True)]
        else:
            options = check_widths(self.kernel_sizes, name, "kernel_sizes")
            net = SuperCNN(list(task.shell.input_shape_), task.n_outputs, self.max_layers,
                           widths[-1], options, self._template.activation)
            net.reset_parameters(generator=torch.Generator().manual_seed(seed))
            choice_alphas = [torch.zeros(len(options), requires_grad=True)
                             for _ in range(self.max_layers)]
        alphas = [*layer_alphas, *choice_alphas]
        w_opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        a_opt = torch.optim.Adam(alphas, lr=self.arch_learning_rate, betas=(0.5, 0.999),
                                 weight_decay=self.arch_weight_decay)

        def forward(inputs):
            layer_weights = [torch.softmax(a, 0) for a in layer_alphas]
            if family == "mlp":
                return net.forward_mixed(inputs, layer_weights,
                                         torch.softmax(choice_alphas[0], 0), widths)
            return net.forward_mixed(inputs, layer_weights,
                                     [torch.softmax(a, 0) for a in choice_alphas], widths)

        def loss_on(index):
            return task.loss(forward(task.X[index]), task.targets[index])

        xi = self.unrolled_learning_rate or self.learning_rate
        self.architecture_weights_, self.search_history_ = [], []
        start = time.perf_counter()
        net.train()
        for epoch in range(1, self.n_epochs + 1):
            train_batches = batches(train, self.batch_size, generator)
            valid_batches = batches(valid, self.batch_size, generator)
            losses = []
            for step, batch in enumerate(train_batches):
                valid_batch = valid_batches[step % len(valid_batches)]
                a_opt.zero_grad()
                if self.order == "first":
                    grads = torch.autograd.grad(loss_on(valid_batch), alphas)
                else:
                    grads = _second_order_grads(net, alphas, loss_on, batch, valid_batch, xi)
                for alpha, grad in zip(alphas, grads):
                    alpha.grad = grad
                a_opt.step()
                w_opt.zero_grad()
                loss = loss_on(batch)
                loss.backward()
                w_opt.step()
                losses.append(float(loss.detach()))
            with torch.no_grad():
                output = forward(task.X[valid])
                valid_loss = float(task.loss(output, task.targets[valid]))
                valid_score = task.score(output, task.targets[valid])
            record = {"epoch": epoch,
                      "layers": [torch.softmax(a, 0).tolist() for a in layer_alphas]}
            if family == "mlp":
                record["activation"] = torch.softmax(choice_alphas[0], 0).tolist()
            else:
                record["kernels"] = [torch.softmax(a, 0).tolist() for a in choice_alphas]
            self.architecture_weights_.append(record)
            self.search_history_.append({
                "epoch": epoch, "train_loss": float(np.mean(losses)),
                "valid_loss": valid_loss, "valid_score": valid_score,
                "time": time.perf_counter() - start,
            })
            if self.verbose:
                print(f"[{name}] epoch {epoch}: train loss {np.mean(losses):.4f}, "
                      f"valid score {valid_score:.4f}")
        net.eval()
        self.search_time_ = time.perf_counter() - start
        self.supernet_ = net
        # Discretize: the largest weight of each mixture (skip drops a
        # layer); with n_candidates > 1 also the next most probable
        # architectures (product of the mixtures' weights).
        mixtures = [torch.log_softmax(a.detach(), 0) for a in [*layer_alphas, *choice_alphas]]
        candidates, scores = [], []
        for picks in _most_probable(mixtures, self.n_candidates):
            choices = [(widths + [SKIP])[i] for i in picks[: self.max_layers]]
            picks = picks[self.max_layers:]
            with torch.no_grad():
                if family == "mlp":
                    activation = options[picks[0]]
                    output = net.forward_discrete(task.X[valid], choices, activation)
                    params = {"hidden_layer_sizes": discrete_sizes(choices),
                              "activation": activation}
                else:
                    output = net.forward_discrete(task.X[valid], choices, picks)
                    sizes = [options[k] for k in picks]
                    params = {"layers": cnn_layers(choices, sizes)}
            if params not in candidates:  # skips can make two picks one network
                candidates.append(params)
                scores.append(task.score(output, task.targets[valid]))
        candidates, scores, sources = shortlist_with_estimator(
            candidates, scores, self._template, family, self.include_estimator)
        evaluate(candidates, extra={"supernet_score": scores, "source": sources})


def _most_probable(log_probs, k):
    """The ``k`` most probable index tuples of independent categoricals.

    A beam over the mixtures, in order: exact for the top ``k`` because
    the log-probability of a tuple is the sum of its parts.
    """
    beam = [(0.0, ())]
    for log_p in log_probs:
        values = log_p.tolist()
        beam = sorted(((score + v, picks + (i,)) for score, picks in beam
                       for i, v in enumerate(values)), key=lambda item: -item[0])[:k]
    return [list(picks) for _, picks in beam]


def _second_order_grads(net, alphas, loss_on, train_batch, valid_batch, xi):
    """Architecture gradients of unrolled DARTS (equations 7-8 of the paper)."""
    weights = [p for p in net.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in weights]
    train_grads = torch.autograd.grad(loss_on(train_batch), weights)
    with torch.no_grad():
        for p, g in zip(weights, train_grads):
            p.sub_(xi * g)  # the virtual step w' = w - xi grad_w L_train
    outs = torch.autograd.grad(loss_on(valid_batch), [*alphas, *weights])
    alpha_grads, dw = outs[: len(alphas)], outs[len(alphas):]
    eps = 0.01 / (float(torch.sqrt(sum((g * g).sum() for g in dw))) + 1e-12)

    def train_alpha_grads(sign):
        with torch.no_grad():
            for p, w0, g in zip(weights, saved, dw):
                p.copy_(w0 + sign * eps * g)
        return torch.autograd.grad(loss_on(train_batch), alphas)

    plus, minus = train_alpha_grads(1.0), train_alpha_grads(-1.0)
    with torch.no_grad():
        for p, w0 in zip(weights, saved):
            p.copy_(w0)
    return [a - xi * (gp - gm) / (2 * eps) for a, gp, gm in zip(alpha_grads, plus, minus)]
