"""Transformer encoders over sequences: TransformerClassifier and TransformerRegressor.

The network is :class:`~sklears_neural.nn.transformer.TransformerNet`; the
input, the per-step targets and the masked loss are the sequence families'
(:mod:`sklears_neural.models._sequence`).
"""

from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import Interval, ResolvableName, StrOptions
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.models._sequence import (
    SEQUENCE_PARAMETERS,
    BaseSequenceEstimator,
    SequenceClassifierMixin,
    SequenceRegressorMixin,
)
from sklears_neural.nn.transformer import TransformerNet

__all__ = ["TransformerClassifier", "TransformerRegressor"]

#: numpydoc entries of the Transformer architecture parameters.
_ARCHITECTURE = {
    "d_model": """\
d_model : int, default=64
    Width of the encoder: every step is projected to ``d_model`` features.
    A multiple of ``num_heads``.""",
    "num_heads": """\
num_heads : int, default=4
    Attention heads per layer.""",
    "num_layers": """\
num_layers : int, default=2
    Encoder layers.""",
    "dim_feedforward": """\
dim_feedforward : int, default=128
    Hidden width of each layer's feed-forward block.""",
    "dropout": """\
dropout : float, default=0.1
    Dropout on the input, the attention weights, the feed-forward
    activations and each block's output (stochastic solvers).""",
    "activation": """\
activation : str or (str, dict), default="gelu"
    Feed-forward activation: "relu", "gelu", "silu", "tanh", ... (the names
    of the MLPs' ``activation``).""",
    "norm_first": """\
norm_first : bool, default=True
    Layer norm before each block (pre-LN, which trains without warm-up)
    when True, after it (the original post-LN) when False.""",
    "positional": """\
positional : {"sinusoidal", "learnable", "relative"} or None, default="sinusoidal"
    How step order enters: the fixed sinusoidal encoding (any length), a
    learned vector per position (at most ``max_len`` steps), a learned
    per-head bias on the attention scores by clipped relative distance
    (any length), or None (the model is blind to order).""",
    "pooling": """\
pooling : {"mean", "cls", "max", "attention"}, default="mean"
    How the steps become one vector per sequence: their mean or maximum
    over valid steps, a learned CLS token's output, or additive attention
    pooling. Unused with ``per_step=True``.""",
    "max_len": """\
max_len : int, default=512
    Longest sequence with ``positional="learnable"``; unused otherwise.""",
    **SEQUENCE_PARAMETERS,
}



class _BaseTransformer(BaseSequenceEstimator):
    """What the two Transformer estimators share: the network and its attention."""

    _parameter_constraints: dict = {
        **BaseSequenceEstimator._parameter_constraints,
        "d_model": [Interval(Integral, 1, None, closed="left")],
        "num_heads": [Interval(Integral, 1, None, closed="left")],
        "num_layers": [Interval(Integral, 0, None, closed="left")],
        "dim_feedforward": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "activation": [ResolvableName(ACTIVATIONS)],
        "norm_first": ["boolean"],
        "positional": [StrOptions({"sinusoidal", "learnable", "relative"}), None],
        "pooling": [StrOptions({"mean", "cls", "max", "attention"})],
        "max_len": [Interval(Integral, 1, None, closed="left")],
    }

    def _build_module(self, n_features_in, n_outputs):
        if self.d_model % self.num_heads:
            suggestion = self.num_heads * max(1, round(self.d_model / self.num_heads))
            raise ValueError(
                f"d_model={self.d_model} is not a multiple of "
                f"num_heads={self.num_heads}: each head takes d_model // num_heads "
                f"features. Choose e.g. d_model={suggestion}."
            )
        self._check_deterministic(self.dropout)
        return ModuleSpec(
            TransformerNet,
            {
                "n_features": self._step_width(n_features_in),
                "n_outputs": int(n_outputs),
                "d_model": int(self.d_model),
                "num_heads": int(self.num_heads),
                "num_layers": int(self.num_layers),
                "dim_feedforward": int(self.dim_feedforward),
                "dropout": float(self.dropout),
                "activation": ACTIVATIONS.to_json(self.activation),
                "norm_first": bool(self.norm_first),
                "positional": self.positional,
                "max_len": int(self.max_len),
                "pooling": self.pooling,
                "per_step": bool(self.per_step),
            },
        )

    def get_attention(self, X):
        """Self-attention weights of every layer and head, per sequence.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_steps, n_features) or list of arrays
            Sequences, as for :meth:`predict`.

        Returns
        -------
        attention : list of ``num_layers`` ndarray of shape (n_samples, num_heads, T, T)
            ``attention[l][i, h, s, t]``: how much step ``s`` of sequence
            ``i`` attends to step ``t`` in head ``h`` of layer ``l``, float64.
            ``T`` is the longest sequence of X (plus one with
            ``pooling="cls"``, whose CLS token is index 0). Rows of valid
            steps sum to 1; rows and columns past a sequence's length are 0.
        """
        check_is_fitted(self, "module_")
        sequences = self._input_kind().validate(self, X, reset=False)
        layers = self.module_.num_layers
        if layers == 0:
            return []
        size = sequences.shape[1] + (1 if self.module_.cls_token is not None else 0)

        def forward(module, inputs):
            maps = torch.stack(module.get_attention(*inputs), dim=1)  # (B, L, H, t, t)
            grow = size - maps.shape[-1]
            # Every chunk padded to the longest sequence of X, so chunks
            # stack whatever their own longest.
            return F.pad(maps, (0, grow, 0, grow)) if grow else maps

        maps = self._raw_outputs(sequences, forward=forward)
        return [np.ascontiguousarray(maps[:, layer]) for layer in range(layers)]


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class TransformerClassifier(SequenceClassifierMixin, ClassifierMixin, _BaseTransformer):
    """Transformer-encoder classifier of sequences (or of each of their steps).

    Each step's features are projected to ``d_model``, positions are added,
    ``num_layers`` self-attention layers mix the steps (padding masked), and
    the valid steps are pooled into one vector that a linear layer turns
    into class logits; with ``per_step=True`` each step gets its own label.
    Trained on the log-loss with the training toolbox of
    :class:`~sklears_neural.MLPClassifier`.

    Parameters
    ----------
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight`` (sequence-to-one
        only).
    <shared parameters>

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    <shared attributes>
    t_ : int
        Training sequences seen by the stochastic solver.
    n_features_in_ : int
        Columns of flat 2-D input (scikit-learn's meaning), else features
        per time step.
    n_step_features_ : int
        Features per time step seen in fit (1 for flat rows without
        ``input_shape``): what ``predict`` checks.
    feature_names_in_ : ndarray of shape (n_columns,)
        Column names of flat 2-D input, when it had string column names.
    module_ : TransformerNet
        The trained network.
    out_activation_ : str
        ``"softmax"`` or ``"logistic"``.

    See Also
    --------
    TransformerRegressor : The regression counterpart.
    RNNClassifier : A recurrent network for the same input.

    Notes
    -----
    X is a 3-D array ``(n_samples, n_steps, n_features)``, a list of
    ``(n_steps_i, n_features)`` (or ``(n_steps_i,)``) arrays of any lengths,
    or flat 2-D rows: univariate sequences, or ``input_shape=(n_steps,
    n_features)`` rows. Batches are padded to their longest sequence;
    padded steps are masked everywhere, so a sequence's prediction does not
    depend on the batch it is in (to float rounding).

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.transformer import TransformerClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(60, 10, 2))
    >>> y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    >>> clf = TransformerClassifier(d_model=16, num_heads=2, max_iter=30,
    ...                             random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> [a.shape for a in clf.get_attention(X[:2])]
    [(2, 2, 10, 10), (2, 2, 10, 10)]
    """

    _parameter_constraints: dict = {
        **_BaseTransformer._parameter_constraints,
        **SequenceClassifierMixin._parameter_constraints,
    }

    def __init__(
        self,
        d_model=64,
        num_heads=4,
        *,
        num_layers=2,
        dim_feedforward=128,
        dropout=0.1,
        activation="gelu",
        norm_first=True,
        positional="sinusoidal",
        pooling="mean",
        max_len=512,
        per_step=False,
        input_shape=None,
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
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.activation = activation
        self.norm_first = norm_first
        self.positional = positional
        self.pooling = pooling
        self.max_len = max_len
        self.per_step = per_step
        self.input_shape = input_shape
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
class TransformerRegressor(SequenceRegressorMixin, RegressorMixin, _BaseTransformer):
    """Transformer-encoder regressor of sequences (or of each of their steps).

    The network of :class:`TransformerClassifier` with a linear output per
    target; minimizes half the squared error, or half the Poisson deviance
    with a log link.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"poisson"`` needs ``y >= 0`` and predicts ``exp`` of the network's
        output.
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    t_ : int
        Training sequences seen by the stochastic solver.
    n_features_in_ : int
        Columns of flat 2-D input (scikit-learn's meaning), else features
        per time step.
    n_step_features_ : int
        Features per time step seen in fit (1 for flat rows without
        ``input_shape``): what ``predict`` checks.
    feature_names_in_ : ndarray of shape (n_columns,)
        Column names of flat 2-D input, when it had string column names.
    module_ : TransformerNet
        The trained network.
    out_activation_ : str
        ``"identity"`` or ``"exp"``.

    See Also
    --------
    TransformerClassifier : The classification counterpart.
    RNNRegressor : A recurrent network for the same input.

    Notes
    -----
    X as for :class:`TransformerClassifier`. With ``per_step=True``, ``y``
    holds a target per step (see ``per_step``) and ``predict`` returns one
    per step.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.transformer import TransformerRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = [rng.normal(size=(n, 1)) for n in (5, 8, 3, 6)]
    >>> y = [np.cumsum(x[:, 0]) for x in X]
    >>> reg = TransformerRegressor(d_model=8, num_heads=2, per_step=True,
    ...                            max_iter=5, random_state=0).fit(X, y)
    >>> [p.shape for p in reg.predict(X[:2])]
    [(5,), (8,)]
    """

    _parameter_constraints: dict = {
        **_BaseTransformer._parameter_constraints,
        **SequenceRegressorMixin._parameter_constraints,
    }

    def __init__(
        self,
        loss="squared_error",
        d_model=64,
        num_heads=4,
        *,
        num_layers=2,
        dim_feedforward=128,
        dropout=0.1,
        activation="gelu",
        norm_first=True,
        positional="sinusoidal",
        pooling="mean",
        max_len=512,
        per_step=False,
        input_shape=None,
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
        self.loss = loss
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.activation = activation
        self.norm_first = norm_first
        self.positional = positional
        self.pooling = pooling
        self.max_len = max_len
        self.per_step = per_step
        self.input_shape = input_shape
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
