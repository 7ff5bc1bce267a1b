"""Recurrent networks over sequences: RNNClassifier and RNNRegressor.

The network is :class:`~sklears_neural.nn.recurrent.RecurrentNet` (LSTM, GRU
or Elman stacks run on packed sequences); the input, the per-step targets
and the masked loss are the sequence families'
(:mod:`sklears_neural.models._sequence`).
"""

from numbers import Integral, Real

import numpy as np
import torch.nn.functional as F
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import Interval, ResolvableName, StrOptions
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.models._sequence import (
    SEQUENCE_PARAMETERS,
    BaseSequenceEstimator,
    SequenceClassifierMixin,
    SequenceRegressorMixin,
)
from sklears_neural.nn.attention import POOLING_ATTENTIONS
from sklears_neural.nn.recurrent import CELLS, POOLINGS, RecurrentNet

__all__ = ["RNNClassifier", "RNNRegressor"]

#: numpydoc entries of the recurrent architecture parameters.
_ARCHITECTURE = {
    "cell": """\
cell : {"lstm", "gru", "rnn"}, default="lstm"
    The recurrent layer: ``torch.nn.LSTM``, ``GRU`` or ``RNN`` (Elman,
    tanh).""",
    "hidden_size": """\
hidden_size : int, default=64
    State width per direction.""",
    "num_layers": """\
num_layers : int, default=1
    Stacked recurrent layers.""",
    "bidirectional": """\
bidirectional : bool, default=False
    Also run a stack backwards in time.""",
    "merge": """\
merge : {"concat", "sum"}, default="concat"
    How the two directions combine when ``bidirectional``: concatenated
    (width ``2 * hidden_size``) or summed.""",
    "pooling": """\
pooling : str, default="last"
    How a sequence's steps become one vector: "last" (the final state;
    bidirectional: the forward state after the last valid step and the
    backward state at step 0), "mean" or "max" over the valid steps, or
    attention pooling: "additive" (Bahdanau), "multiplicative" (Luong),
    "scaled_dot", "multi_head" (see :meth:`get_attention`). Unused with
    ``per_step=True``.""",
    "num_heads": """\
num_heads : int, default=4
    Heads of ``pooling="multi_head"``, a divisor of the pooled width;
    unused otherwise.""",
    "hierarchical": """\
hierarchical : int or None, default=None
    Segment length of a hierarchical network (Yang et al., 2016): each
    sequence is cut into segments of this many steps, each segment is
    encoded and pooled, and a second recurrent stack encodes and pools the
    segment vectors. With an attention pooling, the hierarchical attention
    network. Not with ``per_step=True``.""",
    "dropout": """\
dropout : float, default=0.0
    Dropout between stacked layers and before the output layer
    (stochastic solvers).""",
    **SEQUENCE_PARAMETERS,
}


class _BaseRNN(BaseSequenceEstimator):
    """What the two RNN estimators share: the network and its attention."""

    _parameter_constraints: dict = {
        **BaseSequenceEstimator._parameter_constraints,
        "cell": [ResolvableName(CELLS)],
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "num_layers": [Interval(Integral, 1, None, closed="left")],
        "bidirectional": ["boolean"],
        "merge": [StrOptions({"concat", "sum"})],
        "pooling": [ResolvableName(POOLINGS)],
        "num_heads": [Interval(Integral, 1, None, closed="left")],
        "hierarchical": [None, Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
    }

    def _build_module(self, n_features_in, n_outputs):
        self._check_deterministic(self.dropout)
        # The network pools nothing per step; its check wants "last" then.
        pooling = "last" if self.per_step else POOLINGS.canonical(self.pooling)
        hierarchical = None if self.hierarchical is None else int(self.hierarchical)
        return ModuleSpec(
            RecurrentNet,
            {
                "n_features": self._step_width(n_features_in),
                "n_outputs": int(n_outputs),
                "cell": CELLS.canonical(self.cell),
                "hidden_size": int(self.hidden_size),
                "num_layers": int(self.num_layers),
                "bidirectional": bool(self.bidirectional),
                "merge": self.merge,
                "dropout": float(self.dropout),
                "pooling": pooling,
                "num_heads": int(self.num_heads),
                "per_step": bool(self.per_step),
                "hierarchical": hierarchical,
            },
        )

    def get_attention(self, X):
        """Attention pooling weights over each sequence's steps.

        Only with an attention ``pooling`` ("additive", "multiplicative",
        "scaled_dot", "multi_head").

        Parameters
        ----------
        X : array-like of shape (n_samples, n_steps, n_features) or list of arrays
            Sequences, as for :meth:`predict`.

        Returns
        -------
        attention : ndarray of shape (n_samples, T) or (n_samples, num_heads, T)
            Weight of each step in the pooled vector, float64: sums to 1
            over a sequence's valid steps, 0 past its length (``T`` is the
            longest sequence of X). Per head for "multi_head". With
            ``hierarchical``, a step's weight within its segment times the
            segment's weight.

        Raises
        ------
        ValueError
            If ``pooling`` is not an attention pooling.
        """
        check_is_fitted(self, "module_")
        if self.module_.pool is None:
            raise ValueError(
                f"pooling={self.module_.pooling!r} has no attention weights. Fit "
                f"with an attention pooling ({', '.join(POOLING_ATTENTIONS.names)}) "
                "to read them."
            )
        sequences = self._input_kind().validate(self, X, reset=False)
        size = sequences.shape[1]

        def forward(module, inputs):
            weights = module.forward_with_attention(*inputs)[1].steps
            grow = size - weights.shape[-1]
            # Every chunk padded to the longest sequence of X, so chunks stack.
            return F.pad(weights, (0, grow)) if grow else weights

        return np.ascontiguousarray(self._raw_outputs(sequences, forward=forward))


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class RNNClassifier(SequenceClassifierMixin, ClassifierMixin, _BaseRNN):
    """Recurrent-network classifier of sequences (or of each of their steps).

    A stack of LSTM, GRU or Elman layers reads each sequence (packed, so
    padding never enters the recurrence); its steps are pooled into one
    vector (the last state by default, or mean, max, attention) that a
    linear layer turns into class logits; with ``per_step=True`` each step
    gets its own label. Trained on the log-loss with the training toolbox
    of :class:`~sklears_neural.MLPClassifier`.

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
    module_ : RecurrentNet
        The trained network.
    out_activation_ : str
        ``"softmax"`` or ``"logistic"``.

    See Also
    --------
    RNNRegressor : The regression counterpart.
    TransformerClassifier : Self-attention instead of recurrence.

    Notes
    -----
    X is a 3-D array ``(n_samples, n_steps, n_features)``, a list of
    ``(n_steps_i, n_features)`` (or ``(n_steps_i,)``) arrays of any lengths,
    or flat 2-D rows: univariate sequences, or ``input_shape=(n_steps,
    n_features)`` rows. Batches are padded to their longest sequence and
    packed, so a sequence's prediction does not depend on the batch it is
    in (to float rounding).

    References
    ----------
    Yang, Z. et al. (2016). Hierarchical attention networks for document
    classification. NAACL-HLT.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.rnn import RNNClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = [rng.normal(size=(n, 2)) for n in rng.randint(3, 12, size=60)]
    >>> y = np.array([int(x[:, 0].sum() > 0) for x in X])
    >>> clf = RNNClassifier(hidden_size=16, pooling="additive", max_iter=30,
    ...                     random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> weights = clf.get_attention(X[:2])  # padded to the longer sequence
    >>> weights.shape == (2, max(len(x) for x in X[:2]))
    True
    >>> bool(np.allclose(weights.sum(axis=1), 1.0))
    True
    """

    _parameter_constraints: dict = {
        **_BaseRNN._parameter_constraints,
        **SequenceClassifierMixin._parameter_constraints,
    }

    def __init__(
        self,
        cell="lstm",
        hidden_size=64,
        *,
        num_layers=1,
        bidirectional=False,
        merge="concat",
        pooling="last",
        num_heads=4,
        hierarchical=None,
        dropout=0.0,
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
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.merge = merge
        self.pooling = pooling
        self.num_heads = num_heads
        self.hierarchical = hierarchical
        self.dropout = dropout
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
class RNNRegressor(SequenceRegressorMixin, RegressorMixin, _BaseRNN):
    """Recurrent-network regressor of sequences (or of each of their steps).

    The network of :class:`RNNClassifier` with a linear output per target;
    minimizes half the squared error, or half the Poisson deviance with a
    log link.

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
    module_ : RecurrentNet
        The trained network.
    out_activation_ : str
        ``"identity"`` or ``"exp"``.

    See Also
    --------
    RNNClassifier : The classification counterpart.
    TransformerRegressor : Self-attention instead of recurrence.

    Notes
    -----
    X as for :class:`RNNClassifier`. With ``per_step=True``, ``y`` holds a
    target per step (see ``per_step``) and ``predict`` returns one per step.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.rnn import RNNRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = [rng.normal(size=(n, 1)) for n in (5, 8, 3, 6)]
    >>> y = [np.cumsum(x[:, 0]) for x in X]
    >>> reg = RNNRegressor(hidden_size=8, per_step=True, max_iter=5,
    ...                    random_state=0).fit(X, y)
    >>> [p.shape for p in reg.predict(X[:2])]
    [(5,), (8,)]
    """

    _parameter_constraints: dict = {
        **_BaseRNN._parameter_constraints,
        **SequenceRegressorMixin._parameter_constraints,
    }

    def __init__(
        self,
        loss="squared_error",
        cell="lstm",
        hidden_size=64,
        *,
        num_layers=1,
        bidirectional=False,
        merge="concat",
        pooling="last",
        num_heads=4,
        hierarchical=None,
        dropout=0.0,
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
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.merge = merge
        self.pooling = pooling
        self.num_heads = num_heads
        self.hierarchical = hierarchical
        self.dropout = dropout
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
