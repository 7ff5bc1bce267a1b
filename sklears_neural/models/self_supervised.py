"""Self-supervised encoders: ContrastiveEncoder (SimCLR) and BYOLEncoder.

Both are transformers fitted on X alone: ``transform`` gives each sample's
embedding (the encoder's output, ``n_components`` wide) for a downstream
scikit-learn model. Training draws two augmented *views* of every sample of
a batch with the library's augmenter (``augment``, see
:mod:`sklears_neural.core.augment`), from the fit's generator, and teaches
the network that the two views are the same sample:

- :class:`ContrastiveEncoder` (SimCLR): the views' projections must find
  each other among the batch's other views (NT-Xent loss,
  :func:`~sklears_neural.nn.self_supervised.nt_xent_loss`).
- :class:`BYOLEncoder` (BYOL): the online network predicts the projection
  that a *target* network, an exponential moving average of the online one,
  gives the other view (:func:`~sklears_neural.nn.self_supervised.byol_loss`).
  The target network is declared in ``_networks`` without an optimizer, so
  pickle, ``save``/``load``, rollback and exact resume carry it.

The trainer does not augment these batches itself (``_batch_augmenter`` is
None): the family's objective draws both views from the same augmenter.
"""

import copy
from numbers import Integral, Real

import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core import inference, modes
from sklears_neural.core._compat import (
    Interval,
    PositiveIntSequence,
    ResolvableName,
    StrOptions,
    _check_sample_weight,
)
from sklears_neural.core.augment import AugmentOption, make_augmenter
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.generative import network_device
from sklears_neural.core.inputs import TABULAR, ArrayInput
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.regularization import penalized_parameters, weight_penalty
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.seeding import torch_generator
from sklears_neural.core.tasks import NeuralUnsupervisedMixin
from sklears_neural.nn.conv import ConvNet
from sklears_neural.nn.self_supervised import SelfSupervisedNet, byol_loss, nt_xent_loss

__all__ = ["BYOLEncoder", "ContrastiveEncoder"]

#: ``augment="auto"``: the views' augmentations for each input layout.
#: Measured on digits (doc/generative/self_supervised.md): Gaussian noise
#: alone gave better codes than noise with feature dropout or scaling.
AUTO_AUGMENT = {
    "tabular": [("gaussian_noise", {"std": 0.2})],
    "image": [("random_shift", {"max_shift": 1}), ("gaussian_noise", {"std": 0.2})],
}

#: Seed of the views that score held-out rows (early stopping, ``score``):
#: fixed, so every epoch and every call is scored on the same views.
_SCORE_SEED = 0

_ARCHITECTURE = {
    "n_components": """\
n_components : int, default=8
    Width of the embedding that ``transform`` returns (the encoder's
    output).""",
    "hidden_layer_sizes": """\
hidden_layer_sizes : int or sequence of int, default=(128,)
    Hidden widths of the dense encoder (``encoder="dense"``).""",
    "projection_size": """\
projection_size : int, default=32
    Width of the projection head's output, where the loss is computed.""",
    "projection_hidden": """\
projection_hidden : int, default=64
    Hidden width of the projection head (one hidden layer).""",
    "encoder": """\
encoder : {"dense", "conv"}, default="dense"
    ``"dense"``: fully connected layers (``hidden_layer_sizes``) on flat
    rows; ``"conv"``: a :class:`~sklears_neural.nn.conv.ConvNet`
    (``layers``) on images (``input_shape``).""",
    "layers": """\
layers : list of (str or dict) or None, default=None
    Layers of the convolutional encoder, in the spec language of
    :mod:`sklears_neural.nn.conv` (e.g. ``["conv16", "maxpool2", "conv32",
    "gap"]``); None: its default stack. Ignored by the dense encoder.""",
    "input_shape": """\
input_shape : tuple of int or None, default=None
    ``(channels, *spatial)`` of one sample, e.g. ``(1, 8, 8)``: X is then
    images (or flat rows reshaped to them), the image augmentations apply,
    and a dense encoder flattens them. None: rows for the dense encoder;
    for the conv encoder, the shape of N-D X (flat rows are 1-D signals).""",
    "activation": """\
activation : str or (str, dict), default="relu"
    Hidden activation of the encoder and the heads.""",
    "batch_norm": """\
batch_norm : bool, default=False
    Batch normalization in the heads' hidden layers and after the conv
    encoder's convolutions. Training batches then need 2 rows or more.""",
    "learning_rate_init": """\
learning_rate_init : float, default=0.003
    Initial step size. Three times the MLPs' 0.001: on digits the codes
    were 2-4 points more accurate after the same 100 epochs (see the
    Notes).""",
    "augment": """\
augment : "auto", str, (str, dict), list of them, or None, default="auto"
    The augmentations that make the two views of each sample, by the names
    of :mod:`sklears_neural.core.augment` (tabular rows: "gaussian_noise",
    "uniform_noise", "feature_dropout", "scaling", "magnitude_scaling",
    "permutation"; images: also "random_shift", "flip", "crop"), each view
    drawn independently from the fit's generator. ``"auto"``: Gaussian
    noise of standard deviation 0.2 for rows (standardize them first),
    plus a random shift of up to 1 pixel for images. None: both views are
    the sample itself (nothing to learn from).""",
}


def _never(estimator):
    return False


def _mean_loss(losses, w, penalized, alpha, l1_ratio):
    """Weighted mean of per-sample losses plus the weight penalty (the core's rule)."""
    losses = losses.float() if losses.dtype in (torch.float16, torch.bfloat16) else losses
    if w is None:
        loss, denominator = losses.mean(), losses.shape[0]
    else:
        denominator = w.sum()
        loss = (losses * w).sum() / denominator
    if alpha and penalized:
        loss = loss + weight_penalty(penalized, alpha, l1_ratio) / denominator
    return loss


class _BaseSelfSupervised(NeuralUnsupervisedMixin, ClassNamePrefixFeaturesOutMixin,
                          TransformerMixin, BaseNeuralEstimator):
    """What the two encoders share: views, encoder, transform, held-out loss."""

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [PositiveIntSequence()],
        "projection_size": [Interval(Integral, 1, None, closed="left")],
        "projection_hidden": [Interval(Integral, 1, None, closed="left")],
        "encoder": [StrOptions({"dense", "conv"})],
        "layers": [None, list, tuple],
        "input_shape": [None, list, tuple],
        "activation": [ResolvableName(ACTIVATIONS)],
        "batch_norm": ["boolean"],
        "augment": [StrOptions({"auto"}), AugmentOption()],
    }

    # The loss of a sample depends on its batch (SimCLR's negatives) and on
    # random views: there is no per-sample score to give, so score_samples
    # (which NeuralUnsupervisedMixin defines as minus the per-sample loss) is
    # removed; ``score`` gives minus the mean loss on fixed views instead.
    score_samples = available_if(_never)(NeuralUnsupervisedMixin.score_samples)

    # -- the family's hooks ------------------------------------------------------

    def _input_kind(self):
        if self.encoder == "conv" or self.input_shape is not None:
            return ArrayInput(input_shape=self.input_shape, spatial_dims=(1, 2, 3))
        return TABULAR

    def _make_dataset(self, X, targets=None, sample_weight=None, *, dtype, device):
        # The loss reads the inputs alone: no targets are batched.
        return self._input_kind().dataset(X, None, sample_weight, dtype=dtype,
                                          device=device)

    def _n_outputs_for(self, targets):
        # The network's output is the embedding.
        return int(self.n_components)

    def _batch_augmenter(self):
        # The objective draws both views itself.
        return None

    def _view_augmenter(self):
        """The :class:`~sklears_neural.core.augment.Augmenter` of the views, or None."""
        layout = self._input_kind().layout
        option = AUTO_AUGMENT[layout] if self.augment == "auto" else self.augment
        return make_augmenter(option, layout=layout)

    def _prediction_hidden(self):
        return None

    def _build_module(self, n_features_in, n_outputs):
        if not self._is_stochastic():
            raise ValueError(
                f"{type(self).__name__} trains on random views of each batch: "
                f"solver={self.solver!r} needs a deterministic full-batch objective. "
                "Use a stochastic solver, e.g. solver='adam'."
            )
        kind = self._input_kind()
        shape = [int(n_features_in)] if kind is TABULAR else [int(d) for d in self.input_shape_]
        layers = None
        if self.encoder == "conv":
            try:
                with torch.device("meta"):
                    layers = ConvNet(shape, self.n_components,
                                     None if self.layers is None else list(self.layers),
                                     self.activation, batch_norm=self.batch_norm).layer_specs
            except ValueError as exc:
                raise ValueError(
                    f"Invalid 'layers' of {type(self).__name__}: {exc}"
                ) from None
        sizes = self.hidden_layer_sizes
        sizes = [int(sizes)] if isinstance(sizes, Integral) else [int(n) for n in sizes]
        return ModuleSpec(SelfSupervisedNet, {
            "input_shape": shape,
            "n_components": int(self.n_components),
            "projection_size": int(self.projection_size),
            "encoder": self.encoder,
            "hidden_layer_sizes": sizes if self.encoder == "dense" else [],
            "layers": layers,
            "activation": ACTIVATIONS.to_json(self.activation),
            "projection_hidden": int(self.projection_hidden),
            "prediction_hidden": self._prediction_hidden(),
            "batch_norm": bool(self.batch_norm),
        })

    def _objective(self, module=None):
        augmenter, generator = self._view_augmenter(), self._generator
        alpha, l1_ratio = float(self.alpha), float(self.l1_ratio)
        penalized = penalized_parameters(self.module_ if module is None else module)
        batch_losses = self._batch_losses

        def objective(module, X, y, w):
            return _mean_loss(batch_losses(module, X, augmenter, generator), w,
                              penalized, alpha, l1_ratio)

        return objective

    def _batch_losses(self, module, X, augmenter, generator):
        """Per-sample losses of a batch ``X``, views drawn from ``generator``."""
        raise NotImplementedError

    @staticmethod
    def _views(X, augmenter, generator):
        if augmenter is None:
            return X, X
        return augmenter(X, generator), augmenter(X, generator)

    def _evaluator(self, X_val, y_val, w_val, device, dtype):
        data = self._make_dataset(X_val, None, w_val, dtype=dtype, device=device)

        def evaluate():
            loss = self._held_out_loss(self.module_, data)
            return {"valid_loss": loss, "valid_score": -loss}

        return evaluate

    def _held_out_loss(self, module, data):
        """Mean loss over ``data`` (weighted), in batches, on the fixed views."""
        augmenter = self._view_augmenter()
        generator = torch_generator(_SCORE_SEED)
        batch_size = self._batch_size(data.n_samples)
        total = weight = 0.0
        with torch.inference_mode():
            for start in range(0, data.n_samples, batch_size):
                X, _, w = data.batch(slice(start, min(start + batch_size, data.n_samples)))
                losses = self._batch_losses(module, X, augmenter, generator).double()
                if w is None:
                    total += losses.sum().item()
                    weight += losses.shape[0]
                else:
                    total += (losses * w.double()).sum().item()
                    weight += w.double().sum().item()
        return total / weight

    # -- public API ------------------------------------------------------------

    @property
    def _n_features_out(self):
        return self.n_components

    def transform(self, X):
        """The embedding of each sample: the encoder's output.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Or images ``(n_samples, *input_shape_)`` for an image model.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
        """
        return self._raw_outputs(X)

    def score(self, X, y=None, sample_weight=None):
        """Minus the mean training loss on ``X``, on fixed views.

        The views are drawn from a generator seeded with 0 (the same on
        every call), and the loss is taken over consecutive batches of
        ``batch_size`` rows, as early stopping scores held-out rows. A
        contrastive loss depends on the batch: compare models on the same
        ``X`` in the same order.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
            Greater is better.
        """
        check_is_fitted(self, "module_")
        X = self._input_kind().validate(self, X, reset=False)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        module = self.module_
        data = self._make_dataset(X, None, sample_weight,
                                  dtype=next(module.parameters()).dtype,
                                  device=network_device(module))
        entry = inference._entry(module)
        with modes.predicting(module, entry.training_layers) as situation:
            if situation == modes.OTHER_FIT:
                raise RuntimeError(
                    f"{type(self).__name__}.score was called while another thread "
                    "fits the model; score after the fit returns."
                )
            return -self._held_out_loss(module, data)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags


_CONTRASTIVE = {
    **_ARCHITECTURE,
    "temperature": """\
temperature : float, default=0.5
    Temperature ``tau`` of the NT-Xent loss: cosine similarities are
    divided by it before the softmax over the batch.""",
}


@register_estimator
@document_parameters(extra=_CONTRASTIVE)
class ContrastiveEncoder(_BaseSelfSupervised):
    """Self-supervised encoder trained by contrast (SimCLR), as a transformer.

    Every training batch of ``B`` samples gives two augmented views per
    sample (``augment``); the encoder and a projection head map the ``2B``
    views to vectors, and the NT-Xent loss asks each view to pick its own
    other view among the ``2B - 1`` others. ``transform`` returns the
    encoder's output (not the projection), ``n_components`` wide, for a
    downstream model.

    Parameters
    ----------
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Minus the held-out NT-Xent loss per epoch with ``early_stopping``.
    validation_loss_curve_ : list of float or None
        Held-out NT-Xent loss per epoch with ``early_stopping``.
    n_features_in_ : int
        Number of features (values per sample) seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    input_shape_ : tuple of int
        ``(channels, *spatial)`` of one sample, for an image model.
    module_ : SelfSupervisedNet
        The trained network: ``module_(x)`` the embedding,
        ``module_.project(x)`` the projection.

    See Also
    --------
    BYOLEncoder : Self-supervised without negatives, with a target network.
    sklearn.decomposition.PCA : Linear codes.

    Notes
    -----
    With projections ``z`` normalized to unit length and ``s`` their dot
    products, the loss of view ``a`` whose other view is ``b`` is

    .. math::

        \\ell(a) = -\\log \\frac{\\exp(s_{a,b} / \\tau)}
                   {\\sum_{c \\ne a} \\exp(s_{a,c} / \\tau)},

    a sample's loss is the mean over its two views, and the batch's the
    mean over its samples (weighted by ``sample_weight``). So the loss of a
    sample depends on its batch: there is no ``score_samples``, and ``score``
    is minus the mean loss over fixed views.

    Measured on digits (pixels / 16; logistic regression on 8-dimensional
    codes, the encoder fitted on the training split, stratified 25%
    holdouts, seeds 0-2; ``doc/generative/self_supervised.md``): 0.949-0.958
    with the defaults, against 0.884-0.920 for ``PCA(8)``, 0.62-0.73 for the
    encoder as initialized and 0.949-0.969 for the 64 raw pixels; about 5 s
    a fit on one thread. At ``learning_rate_init=0.001`` the codes scored
    0.918-0.938.

    References
    ----------
    Chen, T., Kornblith, S., Norouzi, M. and Hinton, G. (2020). A simple
    framework for contrastive learning of visual representations. ICML.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural.models.self_supervised import ContrastiveEncoder
    >>> X = load_digits().data[:300] / 16
    >>> enc = ContrastiveEncoder(n_components=4, max_iter=3, random_state=0).fit(X)
    >>> enc.transform(X[:2]).shape
    (2, 4)
    """

    _parameter_constraints: dict = {
        **_BaseSelfSupervised._parameter_constraints,
        "temperature": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        n_components=8,
        hidden_layer_sizes=(128,),
        *,
        projection_size=32,
        projection_hidden=64,
        temperature=0.5,
        encoder="dense",
        layers=None,
        input_shape=None,
        activation="relu",
        batch_norm=False,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.003,
        power_t=0.5,
        max_iter=100,
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
        augment="auto",
    ):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.projection_size = projection_size
        self.projection_hidden = projection_hidden
        self.temperature = temperature
        self.encoder = encoder
        self.layers = layers
        self.input_shape = input_shape
        self.activation = activation
        self.batch_norm = batch_norm
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

    def _batch_losses(self, module, X, augmenter, generator):
        v1, v2 = self._views(X, augmenter, generator)
        return nt_xent_loss(module.project(v1).float(), module.project(v2).float(),
                            float(self.temperature))


_BYOL = {
    **_ARCHITECTURE,
    "batch_norm": """\
batch_norm : bool, default=True
    Batch normalization in the heads' hidden layers and after the conv
    encoder's convolutions. Training batches then need 2 rows or more.
    Without it BYOL drifted towards a constant output on digits: at
    ``learning_rate_init=0.001`` and ``target_decay=0.99`` its codes scored
    0.60-0.78 (logistic regression, three splits) against 0.87-0.90 with
    it.""",
    "prediction_hidden": """\
prediction_hidden : int, default=64
    Hidden width of the online network's prediction head.""",
    "target_decay": """\
target_decay : float, default=0.98
    ``tau`` of the target network's exponential moving average: after each
    training step, ``target = tau * target + (1 - tau) * online``. 1 keeps
    the initial network as the target; 0 makes it the online network.""",
}


@register_estimator
@document_parameters(extra=_BYOL)
class BYOLEncoder(_BaseSelfSupervised):
    """Self-supervised encoder trained by bootstrapping (BYOL), as a transformer.

    An online network (encoder, projection head, prediction head) learns to
    predict, from one augmented view of a sample, the projection that the
    *target* network gives the other view; the target network is an
    exponential moving average of the online one and gets no gradient. No
    negative pairs: the loss of a sample does not depend on the rest of its
    batch. ``transform`` returns the online encoder's output.

    Parameters
    ----------
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Minus the held-out BYOL loss per epoch with ``early_stopping``.
    validation_loss_curve_ : list of float or None
        Held-out BYOL loss per epoch with ``early_stopping``.
    n_features_in_ : int
        Number of features (values per sample) seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    input_shape_ : tuple of int
        ``(channels, *spatial)`` of one sample, for an image model.
    module_ : SelfSupervisedNet
        The online network (with its prediction head).
    target_ : SelfSupervisedNet
        The target network, the moving average of ``module_`` (its
        prediction head is carried along unused).

    See Also
    --------
    ContrastiveEncoder : SimCLR, with negatives from the batch.

    Notes
    -----
    With ``p`` the online prediction of one view and ``z`` the target
    projection of the other, a sample's loss is the mean over the two
    directions of ``2 - 2 cos(p, z)``. The target moves at the start of
    each training step towards the online weights the previous step left,
    which is BYOL's update after that step; so the update of a fit's last
    step is made by the first step of the next ``partial_fit`` or warm
    ``fit`` (``transform`` reads the online network only). As for
    :class:`ContrastiveEncoder` the views are random, so there is no
    ``score_samples``; ``score`` is minus the mean loss on fixed views.

    Measured on digits as for :class:`ContrastiveEncoder`: 0.924-0.953 with
    the defaults, against 0.884-0.920 for ``PCA(8)``; about 5 s a fit. At
    ``learning_rate_init=0.001`` and ``target_decay=0.99`` the codes scored
    0.87-0.90.

    References
    ----------
    Grill, J.-B. et al. (2020). Bootstrap your own latent: a new approach to
    self-supervised learning. NeurIPS.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural.models.self_supervised import BYOLEncoder
    >>> X = load_digits().data[:300] / 16
    >>> enc = BYOLEncoder(n_components=4, max_iter=3, random_state=0).fit(X)
    >>> enc.transform(X[:2]).shape
    (2, 4)
    """

    _parameter_constraints: dict = {
        **_BaseSelfSupervised._parameter_constraints,
        "prediction_hidden": [Interval(Integral, 1, None, closed="left")],
        "target_decay": [Interval(Real, 0, 1, closed="both")],
    }

    _networks = {
        **BaseNeuralEstimator._networks,
        "target_": {"spec": "_module_spec_"},
    }

    def __init__(
        self,
        n_components=8,
        hidden_layer_sizes=(128,),
        *,
        projection_size=32,
        projection_hidden=64,
        prediction_hidden=64,
        target_decay=0.98,
        encoder="dense",
        layers=None,
        input_shape=None,
        activation="relu",
        batch_norm=True,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.003,
        power_t=0.5,
        max_iter=100,
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
        augment="auto",
    ):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.projection_size = projection_size
        self.projection_hidden = projection_hidden
        self.prediction_hidden = prediction_hidden
        self.target_decay = target_decay
        self.encoder = encoder
        self.layers = layers
        self.input_shape = input_shape
        self.activation = activation
        self.batch_norm = batch_norm
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

    def _prediction_hidden(self):
        return int(self.prediction_hidden)

    def _initialize(self, n_features, targets, device, dtype):
        super()._initialize(n_features, targets, device, dtype)
        # The target starts as the online network, and never gets gradients.
        self.target_ = copy.deepcopy(self.module_)

    def _objective(self, module=None):
        online = self.module_
        parameter = next(online.parameters())
        self.target_.to(device=parameter.device, dtype=parameter.dtype)
        base = super()._objective(module)
        decay = float(self.target_decay)

        def objective(module, X, y, w):
            if module.training and torch.is_grad_enabled():
                # The target's update for the previous step, at the one place
                # every training step passes through (whatever the precision);
                # evaluation-mode calls (gradient checks) leave it alone.
                with torch.no_grad():
                    for t, p in zip(self.target_.parameters(), module.parameters()):
                        t.lerp_(p, 1.0 - decay)
            return base(module, X, y, w)

        return objective

    def _batch_losses(self, module, X, augmenter, generator):
        target = self.target_
        target.train(module.training)
        v1, v2 = self._views(X, augmenter, generator)
        p1, p2 = module.predict(v1).float(), module.predict(v2).float()
        with torch.no_grad():
            z1, z2 = target.project(v1).float(), target.project(v2).float()
        return byol_loss(p1, z2, p2, z1)
