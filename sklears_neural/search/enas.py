"""ENASSearch: an LSTM controller trained with REINFORCE samples MLP or CNN
architectures whose weights are shared in one supernet (Pham et al., 2018)."""

import time
from numbers import Integral, Real

import numpy as np
import torch
from torch import nn

from sklears_neural.core._compat import Interval
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

__all__ = ["ENASSearch"]


class ArchitectureController(nn.Module):
    """An LSTM that samples one decision after another.

    Each step feeds the embedding of the previous decision to an
    ``LSTMCell``; a linear head per decision turns the hidden state into
    logits over that decision's choices.

    Parameters
    ----------
    n_choices : list of int
        Choices of each decision, in sampling order.
    hidden_size : int, default=32
    """

    def __init__(self, n_choices, hidden_size=32):
        super().__init__()
        self.n_choices = [int(n) for n in n_choices]
        self.cell = nn.LSTMCell(hidden_size, hidden_size)
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden_size) for n in self.n_choices)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in self.n_choices)

    def reset_parameters(self, generator):
        """Uniform(-0.1, 0.1) for every weight, as in ENAS."""
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-0.1, 0.1, generator=generator)

    def sample(self, generator=None, greedy=False):
        """``(decisions, log_prob, entropy)``: a list of ints and two scalars.

        ``greedy`` takes the most likely choice at each step.
        """
        inputs = self.start
        state = None
        decisions, log_prob, entropy = [], 0.0, 0.0
        for embedding, head in zip(self.embeddings, self.heads):
            h, c = self.cell(inputs, state)
            state = (h, c)
            log_p = torch.log_softmax(head(h)[0], 0)
            if greedy:
                choice = int(torch.argmax(log_p))
            else:
                choice = int(torch.multinomial(log_p.exp(), 1, generator=generator))
            decisions.append(choice)
            log_prob = log_prob + log_p[choice]
            entropy = entropy - (log_p.exp() * log_p).sum()
            inputs = embedding(torch.tensor([choice]))
        return decisions, log_prob, entropy


def reinforce_step(controller, optimizer, reward, baseline, generator, *, entropy_weight,
                   baseline_decay):
    """One REINFORCE step of ``controller``: sample, reward, update.

    Parameters
    ----------
    controller : ArchitectureController
    optimizer : torch.optim.Optimizer
        Over the controller's parameters.
    reward : callable
        ``reward(decisions) -> float``.
    baseline : float or None
        The moving average so far; None starts it at the first reward.
    generator : torch.Generator
    entropy_weight, baseline_decay : float

    Returns
    -------
    reward, baseline, entropy : float
        This step's reward, the updated baseline and the entropy of the
        distribution sampled from.
    """
    decisions, log_prob, entropy = controller.sample(generator)
    value = float(reward(decisions))
    if baseline is None:
        baseline = value
    loss = -(value - baseline) * log_prob - entropy_weight * entropy
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    baseline = baseline_decay * baseline + (1 - baseline_decay) * value
    return value, baseline, float(entropy.detach())


class ENASSearch(SupernetSearchMixin, BaseSearch):
    """Efficient neural architecture search for MLPs and CNNs: controller plus
    shared weights.

    Child models are slices of one supernet. MLPs
    (:class:`~sklears_neural.nn.supernet.SuperMLP`, ``max_layers`` hidden
    layers): per layer a width from ``widths`` or, after the first, skip;
    one hidden activation for all layers (an MLP has one). CNNs
    (:class:`~sklears_neural.nn.supernet.SuperCNN`, ``max_layers`` "same"
    convolutions, then global average pooling): per layer a channel count
    from ``widths`` or, after the first, skip, and a kernel size from
    ``kernel_sizes`` (each size its own weights); the activation is the
    estimator's. Each epoch alternates ENAS's two
    phases: the shared weights train on the training part, one child
    sampled from the controller per mini-batch; then the controller (an
    :class:`ArchitectureController`) takes ``controller_steps`` REINFORCE
    steps, each rewarding a sampled child by its score on the validation
    part (accuracy, or R^2 for regressors), minus a moving-average
    baseline, plus an entropy bonus. At the end ``n_final_samples``
    children (and the controller's most likely one) are scored with the
    shared weights, and the ``n_candidates`` best are set on clones of
    ``estimator``, cross-validated (with, by default, ``estimator``'s own
    architecture beside them) and the best refit: ``best_estimator_`` is
    an ordinary fitted estimator of the family.

    Other estimators are refused with a ``ValueError``; the searchers that
    train every candidate (``EvolutionarySearch``, ``ProgressiveSearch``,
    ``HyperbandSearch``) take any family.

    Parameters
    ----------
    estimator : MLPClassifier, MLPRegressor, CNNClassifier or CNNRegressor
        Its other parameters train the final candidates.
    widths : list of int, default=(32, 64, 128)
        Candidate widths of each hidden layer (channels of each
        convolution for CNNs).
    max_layers : int, default=2
        Hidden (convolution) layers of the supernet.
    activations : list of str, default=("relu", "tanh", "gelu")
        Candidate hidden activations of MLPs (ones without parameters).
    kernel_sizes : list of int, default=(3, 5)
        Candidate odd kernel sizes of CNNs.
    n_epochs : int, default=20
        Epochs of the alternating search.
    controller_steps : int, default=20
        REINFORCE steps per epoch.
    controller_hidden_size : int, default=32
    controller_learning_rate : float, default=5e-3
        Adam step size of the controller.
    entropy_weight : float, default=1e-3
        Weight of the entropy bonus (keeps the controller exploring).
    baseline_decay : float, default=0.9
        The baseline is ``decay * baseline + (1 - decay) * reward``.
    batch_size : int, default=64
    learning_rate : float, default=3e-3
        Adam step size of the shared weights.
    validation_fraction : float, default=0.3
        Share of ``X`` that rewards the controller.
    n_final_samples : int, default=20
        Children sampled from the trained controller to pick from.
    n_candidates : int, default=2
        Distinct best of them cross-validated with their own training.
    include_estimator : bool, default=True
        Also cross-validate ``estimator``'s own architecture
        (``hidden_layer_sizes`` and ``activation``, or ``layers``), so the
        refit model is the best in cross-validation of the found ones and
        the one the search started from; ``cv_results_["source"]`` says
        which is which.
    scoring, cv, n_jobs, pre_dispatch, refit, random_state, verbose, error_score
        See :class:`~sklears_neural.search.BaseSearch`; they apply to the
        cross-validation and refit of the final candidates.

    Attributes
    ----------
    controller_ : ArchitectureController
    supernet_ : SuperMLP or SuperCNN
        The shared weights.
    controller_history_ : list of dict
        Per epoch: ``epoch``, ``train_loss`` (shared weights),
        ``mean_reward``, ``baseline``, ``entropy`` (of the last sample),
        ``greedy_architecture`` (the controller's most likely
        ``hidden_layer_sizes`` and ``activation``, or ``layers``) and
        ``time``.
    search_time_ : float
        Seconds of the search before cross-validation.
    cv_results_, best_estimator_, best_params_, best_architecture_, best_score_, \
best_index_, n_splits_, refit_time_, multimetric_, scorer_
        See :class:`~sklears_neural.search.BaseSearch`; ``cv_results_`` has
        a ``supernet_score`` column (the child's validation score with the
        shared weights; NaN for the estimator's own architecture) and a
        ``source`` column (``"search"`` or ``"estimator"``).

    Notes
    -----
    The controller loss of one step is ``-(R - b) log p(a) - beta H``,
    ``R`` the reward of the sampled architecture ``a``, ``b`` the baseline
    before this step, ``H`` the entropy of the sampling distribution.
    Both networks train with ``torch.optim.Adam`` directly (the core
    ``Trainer`` steps one network on one objective).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.search.enas import ENASSearch
    >>> X, y = load_digits(return_X_y=True)
    >>> search = ENASSearch(MLPClassifier(max_iter=5), widths=(16, 32), n_epochs=2,
    ...                     controller_steps=3, n_candidates=1, cv=2,
    ...                     random_state=0).fit(X[:200] / 16, y[:200])
    >>> len(search.controller_history_), list(search.cv_results_["source"])
    (2, ['search', 'estimator'])
    """

    _parameter_constraints = {
        **BaseSearch._parameter_constraints,
        "widths": [list, tuple],
        "max_layers": [Interval(Integral, 1, None, closed="left")],
        "activations": [list, tuple],
        "kernel_sizes": [list, tuple],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "controller_steps": [Interval(Integral, 0, None, closed="left")],
        "controller_hidden_size": [Interval(Integral, 1, None, closed="left")],
        "controller_learning_rate": [Interval(Real, 0, None, closed="neither")],
        "entropy_weight": [Interval(Real, 0, None, closed="left")],
        "baseline_decay": [Interval(Real, 0, 1, closed="both")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_final_samples": [Interval(Integral, 1, None, closed="left")],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "include_estimator": ["boolean"],
    }

    def __init__(self, estimator, *, widths=(32, 64, 128), max_layers=2,
                 activations=("relu", "tanh", "gelu"), kernel_sizes=(3, 5), n_epochs=20,
                 controller_steps=20, controller_hidden_size=32,
                 controller_learning_rate=5e-3, entropy_weight=1e-3, baseline_decay=0.9,
                 batch_size=64, learning_rate=3e-3, validation_fraction=0.3,
                 n_final_samples=20, n_candidates=2, include_estimator=True,
                 scoring=None, cv=3, n_jobs=None, pre_dispatch="2*n_jobs", refit=True,
                 random_state=None, verbose=0, error_score=np.nan):
        super().__init__(
            estimator, scoring=scoring, cv=cv, n_jobs=n_jobs, pre_dispatch=pre_dispatch,
            refit=refit, random_state=random_state, verbose=verbose, error_score=error_score,
        )
        self.widths = widths
        self.max_layers = max_layers
        self.activations = activations
        self.kernel_sizes = kernel_sizes
        self.n_epochs = n_epochs
        self.controller_steps = controller_steps
        self.controller_hidden_size = controller_hidden_size
        self.controller_learning_rate = controller_learning_rate
        self.entropy_weight = entropy_weight
        self.baseline_decay = baseline_decay
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.n_final_samples = n_final_samples
        self.n_candidates = n_candidates
        self.include_estimator = include_estimator

    def fit(self, X, y=None, **fit_params):
        """Search with the controller, then cross-validate and refit the best.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        **fit_params
            Passed to the estimator's ``fit`` for the final candidates.

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
        layer_choices = [widths] + [widths + [SKIP]] * (self.max_layers - 1)
        if family == "mlp":
            net = task.new_supernet(self.max_layers, widths[-1], self.activations, seed)
            options = net.activation_names
            # One activation for the network, then a width (or skip) per layer.
            n_choices = [len(options)] + [len(c) for c in layer_choices]
        else:
            options = check_widths(self.kernel_sizes, name, "kernel_sizes")
            net = SuperCNN(list(task.shell.input_shape_), task.n_outputs,
                           self.max_layers, widths[-1], options,
                           self._template.activation)
            net.reset_parameters(generator=torch.Generator().manual_seed(seed))
            # Per layer: channels (or skip), then its kernel size.
            n_choices = [n for c in layer_choices for n in (len(c), len(options))]
        controller = ArchitectureController(n_choices, self.controller_hidden_size)
        controller.reset_parameters(generator)
        w_opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        c_opt = torch.optim.Adam(controller.parameters(), lr=self.controller_learning_rate)

        def decode(decisions):
            """``(forward arguments, estimator parameters)`` of a child."""
            if family == "mlp":
                activation = options[decisions[0]]
                choices = [c[d] for c, d in zip(layer_choices, decisions[1:])]
                params = {"hidden_layer_sizes": discrete_sizes(choices),
                          "activation": activation}
                return (choices, activation), params
            choices = [c[d] for c, d in zip(layer_choices, decisions[0::2])]
            kernels = list(decisions[1::2])
            return (choices, kernels), {
                "layers": cnn_layers(choices, [options[k] for k in kernels])}

        X_valid, y_valid = task.X[valid], task.targets[valid]

        def reward(decisions):
            arguments, _ = decode(decisions)
            with torch.no_grad():
                return task.score(net.forward_discrete(X_valid, *arguments), y_valid)

        baseline = None
        self.controller_history_ = []
        start = time.perf_counter()
        for epoch in range(1, self.n_epochs + 1):
            net.train()
            losses = []
            for batch in batches(train, self.batch_size, generator):
                with torch.no_grad():
                    decisions, _, _ = controller.sample(generator)
                arguments, _ = decode(decisions)
                loss = task.loss(net.forward_discrete(task.X[batch], *arguments),
                                 task.targets[batch])
                w_opt.zero_grad()
                loss.backward()
                w_opt.step()
                losses.append(float(loss.detach()))
            net.eval()
            rewards, entropy = [], float("nan")
            for _ in range(self.controller_steps):
                value, baseline, entropy = reinforce_step(
                    controller, c_opt, reward, baseline, generator,
                    entropy_weight=self.entropy_weight, baseline_decay=self.baseline_decay)
                rewards.append(value)
            with torch.no_grad():
                greedy = decode(controller.sample(greedy=True)[0])[1]
            self.controller_history_.append({
                "epoch": epoch, "train_loss": float(np.mean(losses)),
                "mean_reward": float(np.mean(rewards)) if rewards else float("nan"),
                "baseline": float("nan") if baseline is None else float(baseline),
                "entropy": entropy,
                "greedy_architecture": greedy,
                "time": time.perf_counter() - start,
            })
            if self.verbose:
                print(f"[{name}] epoch {epoch}: {self.controller_history_[-1]}")
        self.search_time_ = time.perf_counter() - start
        self.supernet_, self.controller_ = net, controller

        # The controller's most likely child, then samples; distinct ones
        # ranked by their shared-weight score.
        with torch.no_grad():
            samples = [controller.sample(greedy=True)[0]]
            samples += [controller.sample(generator)[0] for _ in range(self.n_final_samples)]
        scored = {}
        for decisions in samples:
            params = decode(decisions)[1]
            key = repr(sorted(params.items()))
            if key not in scored:
                scored[key] = (reward(decisions), params)
        ranked = sorted(scored.values(), key=lambda item: -item[0])[: self.n_candidates]
        candidates = [params for _, params in ranked]
        scores = [score for score, _ in ranked]
        candidates, scores, sources = shortlist_with_estimator(
            candidates, scores, self._template, family, self.include_estimator)
        evaluate(candidates, extra={"supernet_score": scores, "source": sources})
