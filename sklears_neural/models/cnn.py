"""Convolutional networks for signals, images and volumes: CNNClassifier, CNNRegressor.

Both estimators train a :class:`~sklears_neural.nn.conv.ConvNet` with the
shared training core. X is ``(n_samples, channels, *spatial)`` with 1, 2 or
3 spatial dimensions, or flat rows that ``input_shape`` reshapes (so a CNN
sits in a ``Pipeline`` after a ``StandardScaler``); flat rows without
``input_shape`` are one-channel 1-D signals.
"""

from numbers import Real

import torch
from sklearn.base import ClassifierMixin, RegressorMixin

from sklears_neural.core._compat import Interval, ResolvableName
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.init import WEIGHT_INITS
from sklears_neural.core.inputs import ArrayInput
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.tasks import NeuralClassifierMixin, NeuralRegressorMixin
from sklears_neural.nn.conv import ConvNet

__all__ = ["CNNClassifier", "CNNRegressor"]


#: numpydoc entries of the CNN architecture parameters and of the training
#: defaults the CNNs change (see :mod:`sklears_neural.core.docstrings`).
_ARCHITECTURE = {
    "layers": """\
layers : list of (str or dict) or None, default=None
    The convolutional stack, in the spec language of
    :mod:`sklears_neural.nn.conv`: short strings such as ``"conv32"``,
    ``"conv64-k5-s2"``, ``"sep64"``, ``"res64-s2"``, ``"maxpool2"``,
    ``"gap"``, ``"dropout0.25"``, ``"dense128"``, or dicts such as
    ``{"type": "conv", "channels": 32, "kernel_size": 3}``. A linear
    output layer always follows. None: two stages of two 3-wide
    convolutions (32 then 64 channels; 16 then 32 for volumes), each stage
    followed by 2-wide max pooling where the input is long enough, then
    global average pooling (see :func:`~sklears_neural.nn.conv.default_layers`).""",
    "activation": """\
activation : str or (str, dict), default="relu"
    Activation after every convolution and dense layer that names none:
    "identity", "logistic", "tanh", "relu", "leaky_relu", "prelu", "elu",
    "selu", "gelu", "silu", "mish", "softplus".""",
    "input_shape": """\
input_shape : tuple of int or None, default=None
    ``(channels, *spatial)`` of one sample, e.g. ``(1, 8, 8)``: flat 2-D
    rows of ``prod(input_shape)`` values are reshaped to it (row-major),
    and N-D X must have it. None: taken from N-D X in ``fit``; flat rows
    are then one-channel signals ``(1, n_features)``.""",
    "weight_init": """\
weight_init : str or (str, dict), default="he_uniform"
    Initializer of every convolution and linear layer (see
    :data:`~sklears_neural.core.init.WEIGHT_INITS`); biases start at 0.""",
    "dropout": """\
dropout : float, default=0.0
    Drop probability on the input of every dense layer and of the output
    layer (stochastic solvers).""",
    "batch_norm": """\
batch_norm : bool, default=True
    Batch normalization after every convolution that says neither "bn"
    nor "nobn" in ``layers``. Training batches of one sample are then
    refused, and ``solver="lbfgs"`` needs ``batch_norm=False``.""",
    "learning_rate_init": """\
learning_rate_init : float, default=0.01
    Initial step size (stochastic solvers). Ten times the MLPs' 0.001:
    batch normalization keeps larger steps stable, and the default
    network reaches its accuracy in fewer epochs with them (measured on
    digits: see the Notes of :class:`CNNClassifier`).""",
    "max_iter": """\
max_iter : int, default=50
    Epochs for stochastic solvers, iterations for L-BFGS. A quarter of
    the MLPs' 200: a convolution epoch costs far more, and with the
    default learning rate the ``tol`` rule ends training on small image
    sets well before 50.""",
}


class _BaseCNN(BaseNeuralEstimator):
    """What the two CNN estimators share: image input and the ConvNet."""

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "layers": [None, list, tuple],
        "activation": [ResolvableName(ACTIVATIONS)],
        "input_shape": [None, list, tuple],
        "weight_init": [ResolvableName(WEIGHT_INITS)],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
    }

    def _input_kind(self):
        return ArrayInput(input_shape=self.input_shape, spatial_dims=(1, 2, 3))

    def _build_module(self, n_features_in, n_outputs):
        if not self._is_stochastic() and self.dropout > 0:
            raise ValueError(
                "solver='lbfgs' needs a deterministic objective, but dropout makes "
                "it random. Use solver='adam' or 'sgd', or dropout=0."
            )
        shape = [int(d) for d in self.input_shape_]
        # None: ConvNet's default_layers for the input's rank and sizes.
        layers = None if self.layers is None else list(self.layers)
        # Traced now, on the meta device (no memory, ~10 ms), so that a bad
        # spec or a layer that does not fit the input names the user's own
        # item. The fitted spec holds the normalized layers: it pins every
        # field (a later change of a default in nn.conv does not change what
        # a saved model rebuilds), and compares equal however the same
        # network was written (warm_start, partial_fit).
        try:
            with torch.device("meta"):
                specs = ConvNet(shape, n_outputs, layers, self.activation,
                                dropout=self.dropout, batch_norm=self.batch_norm,
                                weight_init=self.weight_init).layer_specs
        except ValueError as exc:
            raise ValueError(f"Invalid 'layers' of {type(self).__name__}: {exc}") from None
        if not self._is_stochastic() and any(
            spec["type"] == "bn" or spec.get("batch_norm") for spec in specs
        ):
            # L-BFGS's line search runs the network in training mode at every
            # trial step, and each run moves the running statistics that
            # predict uses: on 300 digits the fit reached a loss of 7e-4 (all
            # correct in training mode) and predicted 29% correctly.
            raise ValueError(
                "solver='lbfgs' cannot train batch normalization: its line search "
                "updates the running statistics at every trial step, and predictions "
                "use them. Set batch_norm=False (and drop 'bn' layers and '-bn' "
                "options), or use solver='adam' or 'sgd'."
            )
        return ModuleSpec(
            ConvNet,
            {
                "input_shape": shape,
                "n_outputs": int(n_outputs),
                "layers": specs,
                "activation": ACTIVATIONS.to_json(self.activation),
                "dropout": float(self.dropout),
                "batch_norm": bool(self.batch_norm),
                "weight_init": WEIGHT_INITS.to_json(self.weight_init),
            },
        )


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class CNNClassifier(NeuralClassifierMixin, ClassifierMixin, _BaseCNN):
    """Convolutional neural network classifier for signals, images and volumes.

    Trains a :class:`~sklears_neural.nn.conv.ConvNet` (1-, 2- or 3-D
    convolutions, chosen by the rank of one sample) with the log-loss, with
    every training option of :class:`~sklears_neural.MLPClassifier`.

    X is ``(n_samples, channels, length)``, ``(n_samples, channels, height,
    width)`` or ``(n_samples, channels, depth, height, width)``, or flat
    rows ``(n_samples, n_features)`` reshaped by ``input_shape``, so the
    estimator sits in a ``Pipeline`` after a ``StandardScaler``. Flat rows
    without ``input_shape`` are one-channel 1-D signals.

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
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out accuracy per epoch with ``early_stopping``, else ``None``.
    validation_loss_curve_ : list of float or None
        Held-out log-loss per epoch with ``early_stopping``, else ``None``.
    n_features_in_ : int
        Values per sample seen in fit (``prod(input_shape_)``).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X was flat with string column names.
    input_shape_ : tuple of int
        ``(channels, *spatial)`` of one sample, as fitted.
    out_activation_ : str
        ``"softmax"`` or ``"logistic"``.
    module_ : ConvNet
        The trained network; it outputs logits. ``module_.layer_specs``
        lists its layers as normalized dicts.

    See Also
    --------
    CNNRegressor : The regression counterpart.
    MLPClassifier : Fully connected layers on flat rows.

    Notes
    -----
    The defaults differ from the MLPs' in ``learning_rate_init`` (0.01)
    and ``max_iter`` (50). They were measured on 8x8 digits
    (``load_digits``, pixels / 16, 25% stratified holdouts, split seeds
    0-5, one torch thread on a 2-core machine): accuracy 0.987-1.000 (mean
    0.994; ``MLPClassifier()`` scores 0.976 on seeds 0-2), the ``tol`` rule
    ending training after 27-36 epochs, 7-21 s a fit. At 0.001 and 0.003
    the same network needed 40-55 epochs for that accuracy, and early
    stopping on a held-out 10% scored lower (0.981-0.988): it trains on
    less data.

    ``solver="lbfgs"`` needs ``batch_norm=False``: its line search would
    move the running statistics of batch normalization at every trial step.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural.models.cnn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X[:300] / 16
    >>> clf = CNNClassifier(["conv8", "maxpool2", "gap"], input_shape=(1, 8, 8),
    ...                     max_iter=5, random_state=0).fit(X, y[:300])
    >>> clf.predict_proba(X[:2]).shape
    (2, 10)
    >>> clf.input_shape_
    (1, 8, 8)
    """

    _parameter_constraints: dict = {
        **_BaseCNN._parameter_constraints,
        **NeuralClassifierMixin._parameter_constraints,
    }

    def __init__(
        self,
        layers=None,
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.01,
        power_t=0.5,
        max_iter=50,
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
        input_shape=None,
        weight_init="he_uniform",
        dropout=0.0,
        batch_norm=True,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        class_weight=None,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.layers = layers
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
        self.input_shape = input_shape
        self.weight_init = weight_init
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.class_weight = class_weight
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class CNNRegressor(NeuralRegressorMixin, RegressorMixin, _BaseCNN):
    """Convolutional neural network regressor for signals, images and volumes.

    Trains a :class:`~sklears_neural.nn.conv.ConvNet` on half the squared
    error (or half the Poisson deviance with a log link), with every
    training option of :class:`~sklears_neural.MLPRegressor`. X is taken as
    by :class:`CNNClassifier`. As with the MLPs, targets are not scaled:
    standardize ``y`` (e.g. with ``TransformedTargetRegressor``) when its
    scale is far from 1.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"poisson"`` needs ``y >= 0`` and predicts ``exp`` of the network's
        output.
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out R^2 per epoch with ``early_stopping``.
    validation_loss_curve_ : list of float or None
        Held-out loss per epoch with ``early_stopping``.
    n_features_in_ : int
        Values per sample seen in fit (``prod(input_shape_)``).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X was flat with string column names.
    input_shape_ : tuple of int
        ``(channels, *spatial)`` of one sample, as fitted.
    out_activation_ : str
        ``"identity"`` or ``"exp"``.
    converged_ : bool
        Whether the ``tol`` rule (or L-BFGS) ended training early.
    module_ : ConvNet
        The trained network.
    history_ : History
        One dict per epoch.

    See Also
    --------
    CNNClassifier : The classification counterpart.
    MLPRegressor : Fully connected layers on flat rows.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.cnn import CNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((200, 1, 6, 6))
    >>> y = X.mean(axis=(1, 2, 3))
    >>> reg = CNNRegressor(["conv4", "gap"], max_iter=3, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {
        **_BaseCNN._parameter_constraints,
        **NeuralRegressorMixin._parameter_constraints,
    }

    def __init__(
        self,
        layers=None,
        activation="relu",
        *,
        loss="squared_error",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.01,
        power_t=0.5,
        max_iter=50,
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
        input_shape=None,
        weight_init="he_uniform",
        dropout=0.0,
        batch_norm=True,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.layers = layers
        self.activation = activation
        self.loss = loss
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
        self.input_shape = input_shape
        self.weight_init = weight_init
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment
