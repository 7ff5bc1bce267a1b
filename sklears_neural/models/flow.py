"""NormalizingFlow: exact densities of tabular data by maximum likelihood.

The estimator trains a :class:`~sklears_neural.nn.flows.NormalizingFlowNet`
(RealNVP coupling, Glow actnorm and invertible linear mixing) with the
shared training core. Its loss is each sample's negative log-likelihood, so
every toolbox feature (solvers, schedules, early stopping on the held-out
log-likelihood, ``partial_fit``, exact resume, save/load) applies unchanged.
The verbs are those of :class:`~sklearn.mixture.GaussianMixture`:
``score_samples`` (log-likelihood), ``score`` (its mean), ``sample``, plus
``transform`` (to the standard normal base) and ``inverse_transform``.
"""

from numbers import Integral, Real

import numpy as np

import torch

from sklearn.base import OneToOneFeatureMixin, TransformerMixin

from sklears_neural.core._compat import (
    Interval,
    PositiveIntSequence,
    ResolvableName,
    StrOptions,
)
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.generative import SamplerMixin
from sklears_neural.core.inputs import DENSE_TABULAR
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.tasks import NeuralUnsupervisedMixin
from sklears_neural.nn.flows import NormalizingFlowNet

__all__ = ["NormalizingFlow"]




_ARCHITECTURE = {
    "n_layers": """\
n_layers : int, default=12
    Number of flow steps, each actnorm (with ``actnorm=True``), mixing,
    then a coupling layer.""",
    "coupling": """\
coupling : {"affine", "additive"}, default="affine"
    ``"affine"`` (RealNVP): the coupling scales and shifts half the
    features; ``"additive"`` (NICE): it only shifts them (volume is then
    changed by actnorm and the mixing alone).""",
    "hidden_layer_sizes": """\
hidden_layer_sizes : array-like of int or int, default=(64, 64)
    Hidden widths of the MLP inside every coupling layer.""",
    "actnorm": """\
actnorm : bool, default=True
    Glow's activation normalization before every mixing: a per-feature
    scale and shift, initialized from the first training batch so that
    it leaves with zero mean and unit variance, then trained.""",
    "mixing": """\
mixing : {"permute", "invertible_linear"}, default="permute"
    What mixes the features between couplings: ``"permute"`` reverses
    their order (RealNVP's alternating masks); ``"invertible_linear"`` is
    Glow's learned invertible 1x1 convolution, a dense matrix kept in LU
    form (log-determinant in O(D)), starting as a random rotation. On
    2-D moons the random starting rotation left one seed in three in a
    poor optimum (doc/generative/flows.md), hence "permute" by default.""",
    "noise_std": """\
noise_std : float, default=0.05
    Standard deviation of Gaussian noise added to every training batch
    (stochastic solvers; drawn from the fit's generator): noise
    regularization, which keeps the density from collapsing onto the
    training points. Without it, held-out log-likelihood on moons was
    0.1-0.7 nats worse (a few held-out points at -10 to -30). 0 turns it
    off; it is not applied with ``solver="lbfgs"``.""",
    "activation": """\
activation : str or (str, dict), default="relu"
    Activation between the hidden layers of the coupling MLPs: "relu",
    "tanh", "elu", "gelu", "silu", ... (as for the MLPs).""",
    "learning_rate_init": """\
learning_rate_init : float, default=0.003
    Initial step size (stochastic solvers), decayed by ``learning_rate``.""",
    "learning_rate": """\
learning_rate : str or (str, dict), default="cosine"
    Step-size schedule (see the MLPs); ``"cosine"`` decays the step to 0
    over ``max_iter`` epochs.""",
    "batch_size": """\
batch_size : int or "auto", default=100
    Mini-batch size for stochastic solvers; "auto" is ``min(200, n_samples)``.""",
    "max_iter": """\
max_iter : int, default=300
    Epochs for stochastic solvers, iterations for L-BFGS.""",
    "n_iter_no_change": """\
n_iter_no_change : int or np.inf, default=np.inf
    Patience of the ``tol`` rule. Infinite by default: training runs the
    ``max_iter`` epochs of the cosine schedule (the noisy mini-batch
    likelihood plateaus before the schedule has decayed).""",
}


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class NormalizingFlow(NeuralUnsupervisedMixin, SamplerMixin, OneToOneFeatureMixin,
                      TransformerMixin, BaseNeuralEstimator):
    """Normalizing flow density estimator (RealNVP coupling, Glow actnorm and mixing).

    Learns an invertible map ``z = f(x)`` onto a standard normal base by
    maximum likelihood, so the density is exact:
    ``log p(x) = log N(f(x); 0, I) + log |det df/dx|``. The loss is each
    sample's negative log-likelihood (nats).

    Parameters
    ----------
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Mean held-out log-likelihood per epoch with ``early_stopping``,
        else ``None``.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    module_ : NormalizingFlowNet
        The trained flow; ``module_(x)`` gives log-likelihoods ``(n, 1)``,
        ``module_.to_base(x)`` the base point and log-determinant.

    See Also
    --------
    sklearn.mixture.GaussianMixture : A mixture of Gaussians, same verbs.
    sklearn.neighbors.KernelDensity : Kernel density estimate.

    Notes
    -----
    Each of the ``n_layers`` steps is ``actnorm -> mixing -> coupling``
    (:mod:`sklears_neural.nn.flows`). A coupling keeps the first ``D // 2``
    features and changes the others by ``x_b exp(s(x_a)) + t(x_a)``
    (affine, with ``s`` bounded by ``2 tanh(./2)``) or ``x_b + t(x_a)``
    (additive); its MLP's last layer starts at zero, so the flow starts as
    actnorm and mixing only. ActNorm is set from the first training batch
    (drawn by ``random_state``), so fits are deterministic.

    ``score`` is the mean log-likelihood per sample, as
    :meth:`sklearn.mixture.GaussianMixture.score` (``KernelDensity.score``
    is the sum). Standardize features first (``StandardScaler``): the
    defaults were measured on standardized data; the doc page
    ``doc/generative/flows.md`` has the numbers.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from sklears_neural.models.flow import NormalizingFlow
    >>> X, _ = make_moons(200, noise=0.05, random_state=0)
    >>> flow = NormalizingFlow(n_layers=2, max_iter=3, random_state=0).fit(X)
    >>> flow.score_samples(X[:3]).shape
    (3,)
    >>> flow.sample(4, random_state=0).shape
    (4, 2)
    """

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "coupling": [StrOptions({"affine", "additive"})],
        "hidden_layer_sizes": [PositiveIntSequence()],
        "actnorm": ["boolean"],
        "mixing": [StrOptions({"permute", "invertible_linear"})],
        "activation": [ResolvableName(ACTIVATIONS)],
        "noise_std": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_layers=12,
        coupling="affine",
        *,
        hidden_layer_sizes=(64, 64),
        actnorm=True,
        mixing="permute",
        activation="relu",
        noise_std=0.05,
        solver="adam",
        alpha=0.0001,
        batch_size=100,
        learning_rate="cosine",
        learning_rate_init=0.003,
        power_t=0.5,
        max_iter=300,
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
        n_iter_no_change=np.inf,
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
        self.n_layers = n_layers
        self.coupling = coupling
        self.hidden_layer_sizes = hidden_layer_sizes
        self.actnorm = actnorm
        self.mixing = mixing
        self.activation = activation
        self.noise_std = noise_std
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

    def _build_module(self, n_features_in, n_outputs):
        sizes = self.hidden_layer_sizes
        sizes = [int(sizes)] if isinstance(sizes, Integral) else [int(n) for n in sizes]
        return ModuleSpec(
            NormalizingFlowNet,
            {
                "n_features": int(n_features_in),
                "n_layers": int(self.n_layers),
                "hidden_layer_sizes": sizes,
                "coupling": self.coupling,
                "mixing": self.mixing,
                "actnorm": bool(self.actnorm),
                "activation": ACTIVATIONS.to_json(self.activation),
            },
        )

    def _input_kind(self):
        return DENSE_TABULAR

    def _n_outputs_for(self, targets):
        # The module's output: one log-likelihood per row.
        return 1

    def _fit_lbfgs(self, X, targets, sample_weight, device, dtype):
        # ActNorm starts from the data on the first forward pass in training
        # mode. L-BFGS holds the weights as one flat vector from its start, so
        # that pass (over the full batch, L-BFGS's only batch) comes first.
        with torch.no_grad():
            self.module_(torch.as_tensor(X, dtype=dtype, device=device))
        return super()._fit_lbfgs(X, targets, sample_weight, device, dtype)

    def _objective(self, module=None):
        objective = super()._objective(module)
        std = float(self.noise_std)
        if not std or not self._is_stochastic():
            return objective
        generator = self._generator

        def noisy_objective(module, X, y, w):
            # Drawn on the generator's device (the CPU), then moved.
            noise = torch.randn(X.shape, generator=generator, dtype=X.dtype,
                                device=generator.device)
            return objective(module, X + std * noise.to(X.device), y, w)

        return noisy_objective

    def _loss(self, output, target):
        # output: the module's log-likelihood per sample, (n, 1).
        return -output[:, 0]

    def score_samples(self, X):
        """Log-likelihood of each sample under the flow (nats).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,)
        """
        return self._raw_outputs(X)[:, 0]

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood per sample (nats), as ``GaussianMixture.score``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the mean.

        Returns
        -------
        score : float
        """
        return super().score(X, y, sample_weight)

    def transform(self, X):
        """Map samples to the standard normal base space: ``z = f(x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_features)
        """
        return self._raw_outputs(X, forward=lambda module, x: module.to_base(x)[0])

    def inverse_transform(self, X):
        """Map base-space points back to data space: ``x = f^-1(z)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points ``z`` of the base space.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
        """
        return self._raw_outputs(X, forward=lambda module, z: module.from_base(z))

    def _sample(self, n_samples, generator):
        return self.module_.sample(n_samples, generator=generator)
