"""Multi-layer perceptrons: drop-ins for scikit-learn's MLPClassifier/MLPRegressor."""

from numbers import Integral

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelBinarizer

from numbers import Real

from sklears_neural.core._compat import (
    Interval,
    PositiveIntSequence,
    ResolvableName,
)
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.tasks import NeuralClassifierMixin, NeuralRegressorMixin
from sklears_neural.core.fused import FusedMLPStep
from sklears_neural.core.history import History
from sklears_neural.core.init import WEIGHT_INITS
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.regularization import penalized_parameters
from sklears_neural.core.layers import MLP, RESIDUALS, ModuleSpec
from sklears_neural.core.noise import NOISES, set_generator
from sklears_neural.core.plan import compile_plan
from sklears_neural.core.precision import precision_policy
from sklears_neural.core.resolve import ACTIVATIONS, resolve_device
from sklears_neural.core.seeding import torch_generator

__all__ = ["MLPClassifier", "MLPRegressor"]


def _layer_sizes(hidden_layer_sizes):
    if isinstance(hidden_layer_sizes, Integral):
        return [int(hidden_layer_sizes)]
    return [int(n) for n in hidden_layer_sizes]


#: numpydoc entries of the MLP architecture parameters, shared by both MLPs
#: (see :mod:`sklears_neural.core.docstrings`).
_ARCHITECTURE = {
    "hidden_layer_sizes": """\
hidden_layer_sizes : array-like of shape (n_layers - 2,) or int, default=(100,)
    Width of each hidden layer.""",
    "activation": """\
activation : str or (str, dict), default="relu"
    Hidden-layer activation: scikit-learn's "identity", "logistic",
    "tanh", "relu", and "leaky_relu", "prelu" (learnable; settings
    ``{"per_channel": True}``), "elu", "selu", "gelu", "silu" ("swish"),
    "mish", "softplus".""",
    "weight_init": """\
weight_init : str or (str, dict), default="sklearn"
    Initializer: "sklearn" (scikit-learn's Glorot-uniform scheme),
    "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
    "lecun_uniform", "lecun_normal", "orthogonal", "truncated_normal",
    or ("variance_scaling", {"scale", "mode", "distribution"}).""",
    "dropout": """\
dropout : float, default=0.0
    Drop probability after each hidden activation (stochastic solvers).""",
    "batch_norm": """\
batch_norm : bool, default=False
    Batch normalization between each hidden linear and its activation.""",
    "layer_norm": """\
layer_norm : bool, default=False
    Layer normalization there instead (not both).""",
    "residual": """\
residual : {"add", "concat", "gated"} or None, default=None
    Skip connection around each hidden layer; a projection matches
    widths for "add" and "gated".""",
    "noise": """\
noise : str, (str, dict) or None, default=None
    Noise injection on each hidden layer's input in training:
    "gaussian", "uniform", "multiplicative", "salt_and_pepper",
    "dropout", with settings such as ``("gaussian", {"std": 0.1,
    "schedule": "linear"})`` (constant, linear, exponential, step or
    cosine decay over ``max_iter`` epochs).""",
    "spectral_norm": """\
spectral_norm : bool, default=False
    Spectral normalization of every linear layer.""",
    "gradient_checkpointing": """\
gradient_checkpointing : bool, default=False
    Recompute hidden activations in the backward pass to save memory on
    deep stacks; results are unchanged.""",
}


class _BaseMLP(BaseNeuralEstimator):
    """What the two MLP estimators share: the architecture and sklearn's views."""

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "hidden_layer_sizes": [PositiveIntSequence()],
        "activation": [ResolvableName(ACTIVATIONS)],
        "weight_init": [ResolvableName(WEIGHT_INITS)],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
        "layer_norm": ["boolean"],
        "residual": [None, ResolvableName(RESIDUALS)],
        "noise": [None, ResolvableName(NOISES)],
        "spectral_norm": ["boolean"],
        "gradient_checkpointing": ["boolean"],
    }

    def _build_module(self, n_features_in, n_outputs):
        if self.batch_norm and self.layer_norm:
            raise ValueError(
                "batch_norm=True and layer_norm=True were both set; pick one."
            )
        if not self._is_stochastic() and (self.dropout > 0 or self.noise is not None):
            raise ValueError(
                "solver='lbfgs' needs a deterministic objective, but dropout or noise "
                "makes it random. Use solver='adam' or 'sgd', or drop them."
            )
        to_json = lambda resolver, option: (  # noqa: E731
            None if option is None else resolver.to_json(option)
        )
        return ModuleSpec(
            MLP,
            {
                "n_inputs": int(n_features_in),
                "hidden_layer_sizes": _layer_sizes(self.hidden_layer_sizes),
                "n_outputs": int(n_outputs),
                "activation": to_json(ACTIVATIONS, self.activation),
                "weight_init": to_json(WEIGHT_INITS, self.weight_init),
                "dropout": float(self.dropout),
                "batch_norm": bool(self.batch_norm),
                "layer_norm": bool(self.layer_norm),
                "residual": to_json(RESIDUALS, self.residual),
                "noise": to_json(NOISES, self.noise),
                "spectral_norm": bool(self.spectral_norm),
                "gradient_checkpointing": bool(self.gradient_checkpointing),
            },
        )

    #: Train plain MLPs with the written-out backward pass of ``core.fused``
    #: instead of autograd (the same gradients, faster); tests turn it off.
    _use_fused_step = True

    def _train_step(self, policy):
        """A :class:`~sklears_neural.core.fused.FusedMLPStep`, or None for autograd.

        None where the step does not cover the network (dropout,
        normalization, other activations, ...), the loss, or autocast.
        """
        if not self._use_fused_step or policy.autocast_dtype is not None:
            return None
        return FusedMLPStep.for_module(
            self.module_, self._fused_loss_kind(),
            penalized=penalized_parameters(self.module_),
            alpha=self.alpha, l1_ratio=self.l1_ratio,
        )

    def _prediction_plan(self, module):
        """The float64 NumPy plan of the MLP (:mod:`~sklears_neural.core.plan`).

        None where the module holds a layer the plan does not know (a layer
        swapped in by hand): prediction then runs the module itself.
        """
        return compile_plan(module)

    @property
    def n_layers_(self):
        """Number of layers, input and output layers included."""
        return len(self.module_.linears) + 1

    @property
    def coefs_(self):
        """list of ndarray of shape (n_fan_in, n_fan_out): weight matrices.

        Element ``i`` maps layer ``i`` to layer ``i + 1``, as in scikit-learn.
        These are copies: assigning into them does not change the model.
        """
        return [lin.weight.detach().cpu().numpy().T.copy() for lin in self.module_.linears]

    @property
    def intercepts_(self):
        """list of ndarray of shape (n_fan_out,): bias vectors, copies."""
        return [lin.bias.detach().cpu().numpy().copy() for lin in self.module_.linears]

    @classmethod
    def from_sklearn(cls, fitted, **params):
        """Build an equivalent estimator from a fitted scikit-learn MLP.

        The weights, labels and training record of ``fitted`` are copied;
        predictions then agree with scikit-learn's to rounding (use
        ``precision="float64"`` for agreement to ~1e-12).

        Parameters
        ----------
        fitted : sklearn.neural_network.MLPClassifier or MLPRegressor
            A fitted scikit-learn estimator of the matching task.
        **params
            Parameters of this library to set on top of ``fitted``'s
            (``precision``, ``device``, ...).

        Returns
        -------
        estimator : MLPClassifier or MLPRegressor
            Fitted, ready to predict, ``partial_fit`` or ``warm_start``.
        """
        if not hasattr(fitted, "coefs_"):
            raise ValueError(
                f"{type(fitted).__name__} is not fitted: call its fit before "
                f"{cls.__name__}.from_sklearn."
            )
        foreign = sorted(
            k for k in ("residual", "batch_norm", "layer_norm", "spectral_norm")
            if params.get(k)
        )
        if foreign:
            raise ValueError(
                f"from_sklearn copies scikit-learn's plain layers; {foreign} add "
                "layers it does not have. Set them on a new estimator and fit it."
            )
        own = cls().get_params()
        kwargs = {k: v for k, v in fitted.get_params().items() if k in own}
        kwargs.update(params)
        est = cls(**kwargs)
        est._adopt_sklearn_state(fitted)
        coefs, intercepts = fitted.coefs_, fitted.intercepts_
        est.n_outputs_ = int(fitted.n_outputs_)
        est.out_activation_ = fitted.out_activation_
        spec = est._build_module(coefs[0].shape[0], est.n_outputs_)
        device = resolve_device(est.device)
        module = spec.build().to(
            device=device, dtype=precision_policy(est.precision, device).param_dtype
        )
        with torch.no_grad():
            for linear, coef, intercept in zip(module.linears, coefs, intercepts):
                linear.weight.copy_(torch.from_numpy(np.asarray(coef).T.copy()))
                linear.bias.copy_(torch.from_numpy(np.asarray(intercept).copy()))
        est.module_ = module
        est._module_spec_ = spec
        est._generator = torch_generator(est.random_state)
        set_generator(module, est._generator)
        est._reset_training_state()
        est.n_features_in_ = fitted.n_features_in_
        if hasattr(fitted, "feature_names_in_"):
            est.feature_names_in_ = fitted.feature_names_in_
        curve = [float(v) for v in getattr(fitted, "loss_curve_", [])]
        est._record(
            History({"epoch": i + 1, "train_loss": v} for i, v in enumerate(curve)),
            int(getattr(fitted, "t_", 0)),
            int(fitted.n_iter_),
        )
        # scikit-learn's own record, where it differs from what ours derives
        # (L-BFGS keeps no loss curve; early stopping keeps its scores).
        est.loss_ = float(fitted.loss_)
        est.best_loss_ = getattr(fitted, "best_loss_", est.best_loss_)
        est.validation_scores_ = getattr(fitted, "validation_scores_", None)
        est.best_validation_score_ = getattr(fitted, "best_validation_score_", None)
        est.converged_ = est.n_iter_ < fitted.max_iter
        return est

    def _adopt_sklearn_state(self, fitted):
        """Task-specific fitted state (labels) from a scikit-learn estimator."""


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class MLPClassifier(NeuralClassifierMixin, ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier on PyTorch, a drop-in for scikit-learn's.

    Same parameters, defaults, fitted attributes and methods as
    :class:`sklearn.neural_network.MLPClassifier`, plus ``class_weight``,
    ``device``, ``precision`` and ``callbacks``. It minimizes the log-loss
    with L-BFGS (SciPy's, as scikit-learn) or mini-batch SGD/Adam (torch).

    Parameters
    ----------
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight``; ``"balanced"``
        uses ``n_samples / (n_classes * np.bincount(y))``.
    <shared parameters>

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out accuracy per epoch with ``early_stopping``, else ``None``.
    validation_loss_curve_ : list of float or None
        Held-out log-loss per epoch with ``early_stopping``, else ``None``.
    coefs_ : list of ndarray of shape (n_fan_in, n_fan_out)
        Weight matrices (copies).
    intercepts_ : list of ndarray of shape (n_fan_out,)
        Bias vectors (copies).
    n_features_in_ : int
        Number of features seen in fit.
    n_layers_ : int
        Number of layers.
    out_activation_ : str
        ``"softmax"`` or ``"logistic"``.
    converged_ : bool
        Whether the ``tol`` rule (or L-BFGS) ended training before
        ``max_iter``. In a :meth:`partial_fit` loop with ``early_stopping``,
        the signal to stop feeding data.
    module_ : torch.nn.Module
        The trained network; it outputs logits.

    See Also
    --------
    MLPRegressor : The regression counterpart.
    sklearn.neural_network.MLPClassifier : The NumPy original.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:1]).shape
    (1, 3)
    >>> bool(clf.score(X, y) > 0.95)
    True
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        **NeuralClassifierMixin._parameter_constraints,
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        weight_init="sklearn",
        dropout=0.0,
        batch_norm=False,
        layer_norm=False,
        residual=None,
        noise=None,
        spectral_norm=False,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        gradient_checkpointing=False,
        class_weight=None,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.weight_init = weight_init
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.layer_norm = layer_norm
        self.residual = residual
        self.noise = noise
        self.spectral_norm = spectral_norm
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.gradient_checkpointing = gradient_checkpointing
        self.class_weight = class_weight
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment

    def _adopt_sklearn_state(self, fitted):
        self.classes_ = fitted.classes_
        # scikit-learn keeps the label encoder private; it is read here, once.
        self._label_binarizer = fitted._label_binarizer
        if not isinstance(self._label_binarizer, LabelBinarizer):
            raise TypeError("Unexpected label encoder on the scikit-learn model.")


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class MLPRegressor(NeuralRegressorMixin, RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor on PyTorch, a drop-in for scikit-learn's.

    Same parameters, defaults, fitted attributes and methods as
    :class:`sklearn.neural_network.MLPRegressor`, plus ``device``,
    ``precision`` and ``callbacks``. Minimizes half the squared error, or half
    the Poisson deviance with a log link.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"poisson"`` needs ``y >= 0`` and predicts ``exp`` of the network's
        output.
    <shared parameters>

    Attributes
    ----------
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out R^2 per epoch with ``early_stopping``.
    validation_loss_curve_ : list of float or None
        Held-out loss per epoch with ``early_stopping``.
    coefs_ : list of ndarray of shape (n_fan_in, n_fan_out)
        Weight matrices (copies).
    intercepts_ : list of ndarray of shape (n_fan_out,)
        Bias vectors (copies).
    n_features_in_ : int
        Number of features seen in fit.
    n_layers_ : int
        Number of layers.
    out_activation_ : str
        ``"identity"`` or ``"exp"``.
    converged_ : bool
        Whether the ``tol`` rule (or L-BFGS) ended training early.
    module_ : torch.nn.Module
        The trained network.
    history_ : History
        One dict per epoch.

    See Also
    --------
    MLPClassifier : The classification counterpart.
    sklearn.neural_network.MLPRegressor : The NumPy original.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sklears_neural import MLPRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1, random_state=0)
    >>> reg = MLPRegressor(solver="lbfgs", max_iter=500, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> bool(reg.score(X, y) > 0.95)
    True
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        **NeuralRegressorMixin._parameter_constraints,
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        weight_init="sklearn",
        dropout=0.0,
        batch_norm=False,
        layer_norm=False,
        residual=None,
        noise=None,
        spectral_norm=False,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        gradient_checkpointing=False,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.weight_init = weight_init
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.layer_norm = layer_norm
        self.residual = residual
        self.noise = noise
        self.spectral_norm = spectral_norm
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.gradient_checkpointing = gradient_checkpointing
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment
