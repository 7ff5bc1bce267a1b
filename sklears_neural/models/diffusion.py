"""Denoising diffusion models on rows: DiffusionModel.

The estimator trains a :class:`~sklears_neural.nn.diffusion.DenoisingMLP`
to predict the noise of the forward process (Ho et al.'s simple loss) with
the shared training core, samples with DDPM, DDIM or annealed Langevin
dynamics, and scores samples by the variational bound in nats.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import DensityMixin
from sklearn.exceptions import ConvergenceWarning

from sklears_neural.core._compat import (
    Interval,
    PositiveIntSequence,
    ResolvableName,
    StrOptions,
)
from sklears_neural.core.checks import check_options
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.generative import SamplerMixin
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.regularization import penalized_parameters, weight_penalty
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.tasks import NeuralUnsupervisedMixin
from sklears_neural.nn.diffusion import (
    NOISE_SCHEDULES,
    REVERSE_VARIANCES,
    SAMPLERS,
    DenoisingMLP,
)

__all__ = ["DiffusionModel"]

#: Width of the sinusoidal timestep embedding (fixed; kept in the fitted spec).
TIME_EMBEDDING_DIM = 32

#: Seed of the fixed noise of ``score_samples`` (one draw per step, shared by rows).
BOUND_SEED = 0

_PARAMETERS = {
    "hidden_layer_sizes": """\
hidden_layer_sizes : array-like of shape (n_layers,), default=(64, 64, 64)
    Widths of the denoiser's hidden layers; the timestep embedding is
    added to each of them.""",
    "activation": """\
activation : str or (str, dict), default="silu"
    Hidden activation of the denoiser, a name of ``ACTIVATIONS``
    ("relu", "gelu", "silu", ...).""",
    "learning_rate": """\
learning_rate : str or (str, dict), default="cosine"
    Step-size schedule (see the MLPs' ``learning_rate``). The default
    decays the step from ``learning_rate_init`` to 0 over ``max_iter``
    epochs along a half cosine: on standardized moons the samples of a
    constant step stayed at a classifier AUC of 0.55-0.59 between epochs
    400 and 800, those of the cosine decay reach 0.52-0.59 at epoch 600
    (``doc/generative/diffusion.md``).""",
    "learning_rate_init": """\
learning_rate_init : float, default=0.003
    Initial step size. Three times the MLPs' 0.001: on standardized moons
    the default network reached the same sample quality in about half the
    epochs.""",
    "max_iter": """\
max_iter : int, default=600
    Epochs. Each epoch draws a fresh step and noise for every row, so a
    diffusion model needs many more passes than a regressor.""",
    "n_iter_no_change": """\
n_iter_no_change : int or inf, default=inf
    Patience, in epochs, of the ``tol`` rule; ``inf``: train ``max_iter``
    epochs, without a ``ConvergenceWarning`` (the budget is the stopping
    rule, and the cosine schedule ends there). The epoch loss is an average
    over random steps and noise whose spread (~0.01 on moons) exceeds its
    progress over tens of epochs, so a finite patience stops on noise:
    with 100, fits stopped after 130 to 290 of 600 epochs, with samples
    a classifier told apart from data at AUC 0.67-0.74.""",
}


@register_estimator
@document_parameters(extra=_PARAMETERS)
class DiffusionModel(SamplerMixin, NeuralUnsupervisedMixin, DensityMixin,
                     BaseNeuralEstimator):
    """Denoising diffusion probabilistic model (DDPM) of rows.

    ``fit(X)`` trains a network ``eps(x_t, t)`` to predict the noise that
    the forward process ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t)
    I)`` added to a row, at a step ``t`` drawn uniformly per row, with the
    simple loss ``mean |eps - eps(x_t, t)|^2`` of Ho et al. (2020).
    ``sample`` runs the learned reverse process from Gaussian noise;
    ``score_samples`` is a lower bound on each row's log-density (nats).

    Parameters
    ----------
    n_timesteps : int, default=200
        ``T``, the number of noising steps. ``sampler="ddpm"`` and
        ``score_samples`` cost ``T`` network evaluations per sample.
    noise_schedule : {"linear", "cosine", "quadratic", "sigmoid"}, default="linear"
        How ``beta_t`` grows (:func:`~sklears_neural.nn.diffusion.make_betas`):
        evenly ("linear", Ho et al.), evenly in ``sqrt(beta)``
        ("quadratic"), along a sigmoid ("sigmoid"), or from Nichol &
        Dhariwal's ``abar(t) = cos((t/T + 0.008)/1.008 pi/2)^2`` ("cosine",
        which ignores ``beta_start`` and ``beta_end``).
    beta_start : float or None, default=None
        First ``beta``; None: ``1e-4 * 1000 / n_timesteps``.
    beta_end : float or None, default=None
        Last ``beta``; None: ``0.02 * 1000 / n_timesteps``. With both None,
        ``abar_T`` is about 4e-5 for any ``n_timesteps`` (Ho et al.'s
        values at 1,000 steps, scaled as Nichol & Dhariwal do).
    reverse_variance : {"beta", "beta_tilde"}, default="beta"
        Variance ``sigma_t^2`` of the learned reverse steps, Ho et al.'s
        two fixed choices: ``beta_t`` (exact for Gaussian data) or the
        forward posterior's ``beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 -
        abar_{t})`` (optimal for data on points; ``sampler="ddim"`` with
        ``eta=1`` on all steps is DDPM with it). The last step has
        ``beta_1`` in both. On standardized moons the two sample equally
        well and "beta" bounds the log-density 1.6 nats tighter. Used by
        ``sampler="ddpm"`` and ``score_samples``; read when they run, so it
        may be changed after ``fit``.
    sampler : {"ddpm", "ddim", "langevin"}, default="ddpm"
        How :meth:`sample` reverses the process: "ddpm", ancestral
        sampling over all ``T`` steps; "ddim", Song et al.'s implicit
        sampler over ``n_sampling_steps`` steps; "langevin", annealed
        Langevin dynamics on the score ``-eps / sqrt(1 - abar_t)`` over
        ``n_sampling_steps`` noise levels. Read at sampling time: it may be
        changed after ``fit`` with ``set_params``.
    n_sampling_steps : int or None, default=None
        Steps of DDIM, or noise levels of Langevin, evenly spaced over the
        ``T`` steps; None: all ``T``. Ignored by "ddpm".
    eta : float, default=0.0
        DDIM's noise: 0 makes sampling deterministic given the initial
        noise; 1 with all ``T`` steps is DDPM with ``beta_tilde`` variances.
    langevin_steps : int, default=1
        Langevin updates per noise level.
    langevin_snr : float, default=0.4
        Signal-to-noise ratio that sets the Langevin step size,
        ``2 alpha_t (snr |z| / |score|)^2`` (Song et al., 2021), about
        ``2 snr^2 (1 - abar_t)``. On standardized moons 0.4 sampled as well
        as DDPM (classifier AUC 0.53-0.56), Song et al.'s 0.16 for images
        far worse (0.1: 0.77).
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out mean ``score_samples`` (the bound, nats) per epoch with
        ``early_stopping``, else ``None``.
    validation_loss_curve_ : list of float or None
        Minus those, per epoch.
    loss_curve_ : list of float
        The simple loss (mean squared noise-prediction error) per epoch.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    n_outputs_ : int
        1: the network's output through ``_forward`` is minus the bound.
    module_ : DenoisingMLP
        The trained noise predictor; ``module_.diffusion`` holds the
        schedule (``betas``, ``alphas_cumprod``) and the samplers.

    See Also
    --------
    sklears_neural.nn.diffusion.GaussianDiffusion : The process and its samplers.
    sklearn.neighbors.KernelDensity : ``sample`` and ``score_samples`` by kernels.

    Notes
    -----
    Steps are 0-based in code (``i = t - 1``). Every draw of training (the
    steps, the noise, the shuffling) comes from the fit's generator, seeded
    by ``random_state``, so a seed reproduces a fit and a resumed fit
    (``warm_start``, ``partial_fit``, checkpoints) equals an uninterrupted
    one.

    ``score_samples`` is the evidence lower bound (ELBO) of Ho et al.'s
    eq. 5 in nats for the continuous rows, ``L_T + sum_t L_{t-1} + L_0``
    with Gaussian reverse steps of variance ``sigma_t^2``
    (``reverse_variance``) and a Gaussian decoder of variance ``beta_1``,
    the exact model ``sampler="ddpm"`` samples from. Each step's term is
    evaluated at one noisy ``x_t`` drawn with a fixed noise vector per
    step (seed 0), the same for every row: deterministic, a row's bound
    depends on that row alone, and in expectation over the noise it is
    the ELBO, a lower bound on the model's log-density. It is looser than
    a flow's exact log-likelihood (measured on standardized moons: see
    ``doc/generative/diffusion.md``).
    Early stopping watches it on held-out rows.

    ``solver="lbfgs"`` is refused: the objective draws new steps and noise
    at every evaluation. ``sample_weight`` weights each row's loss.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.diffusion import DiffusionModel
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2))
    >>> model = DiffusionModel(hidden_layer_sizes=(32,), n_timesteps=50, max_iter=5,
    ...                        random_state=0).fit(X)
    >>> model.sample(3, random_state=0).shape
    (3, 2)
    >>> model.score_samples(X[:4]).shape
    (4,)
    """

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "hidden_layer_sizes": [PositiveIntSequence()],
        "activation": [ResolvableName(ACTIVATIONS)],
        "n_timesteps": [Interval(Integral, 2, None, closed="left")],
        "noise_schedule": [StrOptions(set(NOISE_SCHEDULES))],
        "beta_start": [None, Interval(Real, 0, 1, closed="neither")],
        "beta_end": [None, Interval(Real, 0, 1, closed="neither")],
        "reverse_variance": [StrOptions(set(REVERSE_VARIANCES))],
        "sampler": [StrOptions(set(SAMPLERS))],
        "n_sampling_steps": [None, Interval(Integral, 1, None, closed="left")],
        "eta": [Interval(Real, 0, None, closed="left")],
        "langevin_steps": [Interval(Integral, 1, None, closed="left")],
        "langevin_snr": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(64, 64, 64),
        activation="silu",
        *,
        n_timesteps=200,
        noise_schedule="linear",
        beta_start=None,
        beta_end=None,
        reverse_variance="beta",
        sampler="ddpm",
        n_sampling_steps=None,
        eta=0.0,
        langevin_steps=1,
        langevin_snr=0.4,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="cosine",
        learning_rate_init=0.003,
        power_t=0.5,
        max_iter=600,
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
        n_iter_no_change=math.inf,
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.n_timesteps = n_timesteps
        self.noise_schedule = noise_schedule
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.reverse_variance = reverse_variance
        self.sampler = sampler
        self.n_sampling_steps = n_sampling_steps
        self.eta = eta
        self.langevin_steps = langevin_steps
        self.langevin_snr = langevin_snr
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

    # -- the network -------------------------------------------------------------------

    def _build_module(self, n_features_in, n_outputs):
        if not self._is_stochastic():
            raise ValueError(
                "DiffusionModel cannot train with solver='lbfgs': its objective draws "
                "new timesteps and noise at every evaluation, which a line search "
                "cannot follow. Use solver='adam' (the default) or 'sgd'."
            )
        sizes = self.hidden_layer_sizes
        sizes = [int(sizes)] if isinstance(sizes, Integral) else [int(n) for n in sizes]
        if not sizes:
            raise ValueError(
                "DiffusionModel needs at least one hidden layer (the timestep enters "
                "through them); got hidden_layer_sizes=(). Pass e.g. (64, 64)."
            )
        return ModuleSpec(
            DenoisingMLP,
            {
                "n_features": int(n_features_in),
                "hidden_layer_sizes": sizes,
                "n_timesteps": int(self.n_timesteps),
                "noise_schedule": self.noise_schedule,
                "beta_start": _float_or_none(self.beta_start),
                "beta_end": _float_or_none(self.beta_end),
                "activation": ACTIVATIONS.to_json(self.activation),
                "time_embedding_dim": TIME_EMBEDDING_DIM,
            },
        )

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        X, _, sample_weight = super()._validate_training_data(
            X, y, sample_weight, reset=reset, incremental=incremental, classes=classes
        )
        # The objective draws its own targets (the noise): no copy of X (or
        # dense tensor of sparse X) as targets, an empty column per row.
        return X, np.empty((X.shape[0], 0), dtype=np.float32), sample_weight

    def _n_outputs_for(self, targets):
        # One value per row through ``_forward``: minus its bound.
        return 1

    # -- training ----------------------------------------------------------------------

    def _objective(self, module=None):
        """Ho et al.'s simple loss; a step and a noise per row from ``_generator``."""
        alpha, l1_ratio = float(self.alpha), float(self.l1_ratio)
        penalized = penalized_parameters(self.module_ if module is None else module)
        generator = self._generator

        def objective(module, X, y, w):
            diffusion = module.diffusion
            n = X.shape[0]
            steps = torch.randint(diffusion.n_timesteps, (n,), generator=generator,
                                  device=generator.device).to(X.device)
            noise = torch.randn(X.shape, generator=generator, dtype=X.dtype,
                                device=generator.device).to(X.device)
            predicted = module(diffusion.q_sample(X, steps, noise), steps)
            if predicted.dtype in (torch.float16, torch.bfloat16):
                predicted = predicted.float()
            per_sample = (predicted - noise.to(predicted.dtype)).pow(2).mean(dim=1)
            if w is None:
                loss, denominator = per_sample.mean(), n
            else:
                denominator = w.sum()
                loss = (per_sample * w).sum() / denominator
            if alpha and penalized:
                loss = loss + weight_penalty(penalized, alpha, l1_ratio) / denominator
            return loss

        return objective

    def _fit_stochastic(self, X, targets, sample_weight, incremental, device, policy):
        fit = super()._fit_stochastic
        if self.n_iter_no_change != math.inf:
            return fit(X, targets, sample_weight, incremental, device, policy)
        # Without a stopping rule, max_iter is the budget, not a failure to converge.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum",
                                    category=ConvergenceWarning)
            return fit(X, targets, sample_weight, incremental, device, policy)

    # -- the bound ---------------------------------------------------------------

    def _forward(self, module, inputs):
        # Minus each row's bound, (n, 1): what validation, score_samples and
        # the load-time width check run.
        diffusion = module.diffusion
        noise = diffusion.bound_noise(inputs.shape[1], seed=BOUND_SEED)
        variance = check_options(type(self).__name__, "reverse_variance",
                                 self.reverse_variance, REVERSE_VARIANCES)
        bound = diffusion.negative_elbo(module, inputs, noise, variance=variance)
        return bound[:, None]

    def _loss(self, output, target):
        return output[:, 0]

    def score_samples(self, X):
        """Variational lower bound on each row's log-density (ELBO, nats).

        See the Notes: the bound of Ho et al.'s eq. 5 for the model that
        ``sampler="ddpm"`` samples from, each step's term at a fixed noise
        draw shared by all rows. Costs ``n_timesteps`` network evaluations
        per row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        elbo : ndarray of shape (n_samples,)
            Greater is more likely.
        """
        return super().score_samples(X)

    def score(self, X, y=None, sample_weight=None):
        """Mean ``score_samples`` (nats per row), weighted by ``sample_weight``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        return super().score(X, y, sample_weight)

    # -- sampling ----------------------------------------------------------------

    def _sample(self, n_samples, generator):
        owner = type(self).__name__
        sampler = check_options(owner, "sampler", self.sampler, SAMPLERS)
        module = self.module_
        parameter = next(module.parameters())
        return module.diffusion.sample(
            module,
            (n_samples, self.n_features_in_),
            generator,
            sampler=sampler,
            variance=check_options(owner, "reverse_variance", self.reverse_variance,
                                   REVERSE_VARIANCES),
            n_steps=self.n_sampling_steps,
            eta=float(self.eta),
            langevin_steps=int(self.langevin_steps),
            langevin_snr=float(self.langevin_snr),
            dtype=parameter.dtype,
            device=parameter.device,
        )


def _float_or_none(value):
    return None if value is None else float(value)
