"""Autoencoders as scikit-learn transformers: Autoencoder.

:class:`Autoencoder` trains a :class:`~sklears_neural.nn.autoencoder.DenseAutoencoder`
(flat rows) or :class:`~sklears_neural.nn.autoencoder.ConvAutoencoder`
(signals and images) to reconstruct X, with every training option of the
core. ``transform`` gives the codes, ``inverse_transform`` decodes them,
``score_samples`` is minus each sample's reconstruction error (greater is
more typical, so it ranks anomalies as ``IsolationForest.score_samples``
does).
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from sklears_neural.core import inference, modes
from sklears_neural.core._compat import Interval, PositiveIntSequence, ResolvableName
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.generative import (
    as_input_layout,
    fitted_on_flat_rows,
    network_device,
)

from sklears_neural.core.inputs import DENSE_TABULAR, ArrayInput
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.regularization import penalized_parameters, weight_penalty
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.tasks import NeuralUnsupervisedMixin
from sklears_neural.nn.autoencoder import ConvAutoencoder, DenseAutoencoder

__all__ = ["Autoencoder"]




def layer_sizes(hidden_layer_sizes):
    """``hidden_layer_sizes`` as a list of int (an int is one layer)."""
    if isinstance(hidden_layer_sizes, Integral):
        return [int(hidden_layer_sizes)]
    return [int(n) for n in hidden_layer_sizes]


def run_on_codes(estimator, Z, function):
    """``function(module, Z)`` on validated codes ``Z``, as float64 NumPy.

    What ``inverse_transform`` does for every family of this module: the
    fitted check, codes of ``n_components`` columns, evaluation mode and no
    gradients (a fit in another thread is refused, as for ``sample``), in
    chunks of the module's own dtype.
    """
    check_is_fitted(estimator, "module_")
    Z = check_array(Z, dtype=[np.float64, np.float32])
    if Z.shape[1] != estimator.n_components:
        raise ValueError(
            f"X has {Z.shape[1]} features, but {type(estimator).__name__}."
            f"inverse_transform takes codes of n_components={estimator.n_components} "
            "features (the output of transform)."
        )
    module = estimator.module_
    entry = inference._entry(module)
    dtype = next(module.parameters()).dtype
    device = network_device(module)
    chunks = []
    with modes.predicting(module, entry.training_layers) as situation:
        if situation == modes.OTHER_FIT:
            raise RuntimeError(
                f"{type(estimator).__name__}.inverse_transform was called while another "
                "thread fits the model; call it after the fit returns."
            )
        with torch.inference_mode():
            for start in range(0, max(len(Z), 1), 4096):
                z = torch.as_tensor(Z[start:start + 4096], dtype=dtype, device=device)
                chunks.append(function(module, z).to("cpu", torch.float64).numpy())
    out = np.concatenate(chunks) if chunks else np.empty((len(Z), 0))
    return as_input_layout(estimator, out)


def training_objective(estimator, module, per_sample, batch_penalty=None):
    """``objective(module, X, y, w)`` from per-sample losses, as the base builds it.

    ``per_sample(module, X, y) -> (losses, extra)``: the weighted mean of
    the losses (total weight in the denominator), plus
    ``batch_penalty(extra, w)`` if given, plus the ``alpha`` weight penalty
    divided by the total weight, as scikit-learn scales it.
    """
    alpha, l1_ratio = float(estimator.alpha), float(estimator.l1_ratio)
    penalized = penalized_parameters(module)

    def objective(module, X, y, w):
        losses, extra = per_sample(module, X, y)
        if w is None:
            denominator = losses.shape[0]
            loss = losses.mean()
        else:
            denominator = w.sum()
            loss = (losses * w).sum() / denominator
        if batch_penalty is not None:
            loss = loss + batch_penalty(extra, w)
        if alpha and penalized:
            loss = loss + weight_penalty(penalized, alpha, l1_ratio) / denominator
        return loss

    return objective


@register_estimator
@document_parameters
class Autoencoder(ClassNamePrefixFeaturesOutMixin, NeuralUnsupervisedMixin,
                  TransformerMixin, BaseNeuralEstimator):
    """Autoencoder: a neural network trained to reconstruct X through a narrow code.

    A transformer: ``transform`` maps X to codes ``(n_samples,
    n_components)``, ``inverse_transform`` maps codes back to
    reconstructions shaped like X, as :class:`~sklearn.decomposition.PCA`
    does with a linear map. ``score_samples`` is minus each sample's
    reconstruction error, so low scores flag anomalies.

    Three kinds: "vanilla" (reconstruct X), "denoising" (reconstruct X
    from a corrupted copy: Gaussian noise or masking, in training only),
    "sparse" (reconstruction plus a sparsity penalty on the codes).
    The encoder is dense (flat rows) or convolutional (signals and images:
    N-D X ``(n_samples, C, *spatial)``, or flat rows reshaped by
    ``input_shape``).

    Parameters
    ----------
    n_components : int, default=2
        Width of the code (the output of ``transform``).
    hidden_layer_sizes : array-like of int or int, default=(128,)
        Dense encoder: widths of its hidden layers, input side first; the
        decoder mirrors them. Convolutional encoder: channels of its
        stride-2 convolutions (e.g. ``(16, 32)``).
    activation : str, default="relu"
        Hidden activation: "identity", "logistic", "tanh", "relu", "elu",
        "gelu", ... (the names of the MLPs).
    kind : {"vanilla", "denoising", "sparse"}, default="vanilla"
        What the network is trained for; see the Notes.
    noise : {"gaussian", "masking"}, default="gaussian"
        Corruption of ``kind="denoising"``: additive Gaussian noise of
        standard deviation ``noise_level``, or masking (each input value
        set to 0 with probability ``noise_level``). Ignored by the other kinds.
    noise_level : float, default=0.2
        Standard deviation ("gaussian") or masking probability ("masking").
    sparsity : {"l1", "kl"}, default="l1"
        Penalty of ``kind="sparse"``: the sum of absolute code values per
        sample (linear codes), or the KL divergence between
        ``sparsity_target`` and each code unit's mean activation over the
        batch (logistic codes in (0, 1)).
    sparsity_weight : float, default=1e-3
        Weight of the sparsity penalty.
    sparsity_target : float, default=0.05
        Target mean activation of the "kl" penalty, in (0, 1).
    encoder : {"dense", "conv"}, default="dense"
        Fully connected layers on flat rows, or a convolutional
        encoder/decoder (:class:`~sklears_neural.nn.autoencoder.ConvAutoencoder`)
        for 1-D signals and 2-D images.
    input_shape : tuple of int or None, default=None
        ``encoder="conv"`` only: ``(channels, *spatial)`` of one sample;
        flat rows are reshaped to it. None: taken from N-D X; flat rows are
        then one-channel signals.
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Minus the held-out loss per epoch with ``early_stopping``.
    validation_loss_curve_ : list of float or None
        Held-out loss per epoch with ``early_stopping``.
    n_features_in_ : int
        Values per sample seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    input_shape_ : tuple of int
        ``encoder="conv"`` only: ``(channels, *spatial)`` as fitted.
    module_ : DenseAutoencoder or ConvAutoencoder
        The trained network (``encode``, ``decode``).

    See Also
    --------
    VAE : A probabilistic autoencoder with a likelihood bound and ``sample``.
    sklearn.decomposition.PCA : The linear autoencoder.

    Notes
    -----
    With reconstruction ``r(x) = decode(encode(x))``, every kind minimizes
    the mean of half the squared error ``0.5 * ||r(x~) - x||^2`` (summed
    over features), where ``x~`` is ``x`` ("vanilla", "sparse") or its
    corruption ("denoising"), plus ``alpha`` times the weight penalty as
    in the MLPs. "sparse" adds ``sparsity_weight`` times
    ``sum_j |c_j|`` per sample ("l1", linear codes ``c``) or
    ``sum_j KL(rho || rho_hat_j)`` per batch ("kl", logistic codes,
    ``rho_hat_j`` the batch's mean activation of unit ``j``).
    ``score_samples(x) = -0.5 * ||r(x) - x||^2`` with the clean input.

    ``solver="lbfgs"`` needs a deterministic objective, so it refuses
    ``kind="denoising"``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklears_neural.models.autoencoder import Autoencoder
    >>> X = load_digits().data[:300] / 16
    >>> ae = Autoencoder(n_components=8, max_iter=5, random_state=0).fit(X)
    >>> ae.transform(X[:2]).shape
    (2, 8)
    >>> ae.inverse_transform(ae.transform(X[:2])).shape
    (2, 64)
    """

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [PositiveIntSequence()],
        "activation": [ResolvableName(ACTIVATIONS)],
        "kind": [StrOptions({"vanilla", "denoising", "sparse"})],
        "noise": [StrOptions({"gaussian", "masking"})],
        "noise_level": [Interval(Real, 0, None, closed="left")],
        "sparsity": [StrOptions({"l1", "kl"})],
        "sparsity_weight": [Interval(Real, 0, None, closed="left")],
        "sparsity_target": [Interval(Real, 0, 1, closed="neither")],
        "encoder": [StrOptions({"dense", "conv"})],
        "input_shape": [None, list, tuple],
    }

    def __init__(
        self,
        n_components=2,
        hidden_layer_sizes=(128,),
        activation="relu",
        *,
        kind="vanilla",
        noise="gaussian",
        noise_level=0.2,
        sparsity="l1",
        sparsity_weight=1e-3,
        sparsity_target=0.05,
        encoder="dense",
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
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.kind = kind
        self.noise = noise
        self.noise_level = noise_level
        self.sparsity = sparsity
        self.sparsity_weight = sparsity_weight
        self.sparsity_target = sparsity_target
        self.encoder = encoder
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

    # -- the family's hooks ------------------------------------------------------

    def _input_kind(self):
        if self.encoder == "conv":
            return ArrayInput(input_shape=self.input_shape, spatial_dims=(1, 2))
        return DENSE_TABULAR

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        if reset:
            self._fitted_on_flat_rows = self.encoder == "dense" or fitted_on_flat_rows(X)
        return super()._validate_training_data(
            X, y, sample_weight, reset=reset, incremental=incremental, classes=classes
        )

    def _code_activation(self):
        return "logistic" if self.kind == "sparse" and self.sparsity == "kl" else "identity"

    def _build_module(self, n_features_in, n_outputs):
        denoising = self.kind == "denoising"
        if denoising and not self._is_stochastic() and self.noise_level > 0:
            raise ValueError(
                "solver='lbfgs' needs a deterministic objective, but kind='denoising' "
                "corrupts every batch at random. Use solver='adam' or 'sgd', or "
                "another kind."
            )
        if self.noise == "masking" and self.noise_level > 1:
            raise ValueError(
                f"noise='masking' takes a probability: noise_level must be in [0, 1], "
                f"got {self.noise_level!r}."
            )
        self._n_features_out = int(self.n_components)
        common = {
            "n_components": int(self.n_components),
            "activation": ACTIVATIONS.to_json(self.activation),
            "code_activation": self._code_activation(),
            "noise": self.noise if denoising else None,
            "noise_level": float(self.noise_level) if denoising else 0.0,
        }
        if self.encoder == "conv":
            return ModuleSpec(ConvAutoencoder, {
                "input_shape": [int(d) for d in self.input_shape_],
                "channels": layer_sizes(self.hidden_layer_sizes),
                **common,
            })
        return ModuleSpec(DenseAutoencoder, {
            "n_inputs": int(n_features_in),
            "hidden_layer_sizes": layer_sizes(self.hidden_layer_sizes),
            **common,
        })

    def _objective(self, module=None):
        if self.kind != "sparse":
            return super()._objective(module)
        loss_fn = self._loss
        weight = float(self.sparsity_weight)
        module = self.module_ if module is None else module

        def per_sample(module, X, y):
            reconstruction, code = module.forward_with_code(X)
            if reconstruction.dtype in (torch.float16, torch.bfloat16):
                reconstruction, code = reconstruction.float(), code.float()
            losses = loss_fn(reconstruction, y)
            if self.sparsity == "l1":
                losses = losses + weight * code.abs().sum(dim=1)
            return losses, code

        if self.sparsity == "l1":
            return training_objective(self, module, per_sample)
        rho = float(self.sparsity_target)

        def kl_penalty(code, w):
            if w is None:
                rho_hat = code.mean(dim=0)
            else:
                rho_hat = (code * w[:, None]).sum(dim=0) / w.sum()
            rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log(
                (1 - rho) / (1 - rho_hat)
            )
            return weight * kl.sum()

        return training_objective(self, module, per_sample, kl_penalty)

    # -- transformer ---------------------------------------------------------------

    def transform(self, X):
        """Codes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Or ``(n_samples, C, *spatial)`` with ``encoder="conv"``.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
        """
        return self._raw_outputs(X, forward=lambda module, x: module.encode(x))

    def inverse_transform(self, X):
        """Reconstructions decoded from codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Codes, as ``transform`` returns them.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features_in_)
            Or ``(n_samples, *input_shape_)``: the layout of the X of ``fit``.
        """
        return run_on_codes(self, X, lambda module, z: module.decode(z))

    def score_samples(self, X):
        """Minus each sample's reconstruction error ``0.5 * ||x - r(x)||^2``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Or ``(n_samples, C, *spatial)`` with ``encoder="conv"``.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Greater is more typical; outliers score low.
        """
        return super().score_samples(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags
