"""Generative adversarial networks: GAN.

One estimator, two networks, two optimizers: the generator is ``module_``
(the core's network, so its optimizer, learning-rate schedules, gradient
clipping, callbacks, checkpoints and rollback are the core's), and the
discriminator ``discriminator_``, declared in ``_networks`` with an
optimizer of its own, is stepped in the family's training step before each
generator step. Every latent and interpolation draw comes from the fit's
generator, so ``random_state`` fixes a fit and a checkpoint resumes it
exactly.
"""

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core import modes
from sklears_neural.core._compat import Interval, ResolvableName, StrOptions
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.generative import SamplerMixin, fitted_on_flat_rows
from sklears_neural.core.inputs import TABULAR, ArrayInput
from sklears_neural.core.layers import MLP, ModuleSpec
from sklears_neural.core.optim import SOLVERS, make_optimizer
from sklears_neural.core.regularization import penalized_parameters, weight_penalty
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.tasks import NeuralUnsupervisedMixin
from sklears_neural.nn.gan import (
    ConvDiscriminator,
    ConvGenerator,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)

__all__ = ["GAN"]

#: Held-out rows the early-stopping MMD compares at most (its cost is quadratic).
_MMD_ROWS = 500

_MAX_ITER_WARNING = r"Stochastic Optimizer: Maximum iterations"

#: numpydoc entries of the shared parameters whose defaults the GAN changes.
_DEFAULTS = {
    "learning_rate_init": """\
learning_rate_init : float, default=0.001
    Initial step size of the generator's optimizer, and of the
    discriminator's unless ``discriminator_learning_rate`` is set.""",
    "learning_rate": """\
learning_rate : str or (str, dict), default="cosine"
    Step-size schedule of both optimizers (the discriminator's follows the
    generator's factor): "constant", "cosine", "step", "exponential",
    "cyclic", "one_cycle", and for ``solver="sgd"`` "invscaling" and
    "adaptive". "cosine" by default: annealing both players to a small step
    ends the game near an equilibrium instead of circling it (measured on
    moons: classifier two-sample AUC 0.61-0.63 over seeds 0-2 at 300
    epochs, against 0.66-0.74 with "constant").""",
    "beta_1": """\
beta_1 : float, default=0.5
    Adam's first-moment decay, for both optimizers. 0.5 rather than 0.9, as
    GANs are usually trained: the two players' gradients change direction
    often, and long momentum makes them circle.""",
    "batch_size": """\
batch_size : int or "auto", default=64
    Real samples per step, and as many generated ones.""",
    "max_iter": """\
max_iter : int, default=300
    Epochs: passes over the real samples, one generator step per batch. A GAN
    has no convergence criterion (its losses are a game's, not a
    decreasing objective): without ``early_stopping`` every fit runs
    ``max_iter`` epochs, and no ``ConvergenceWarning`` is issued.""",
    "tol": """\
tol : float, default=1e-4
    With ``early_stopping``: the least decrease of the held-out MMD^2 that
    counts as an improvement. Unused otherwise (see ``max_iter``).""",
    "n_iter_no_change": """\
n_iter_no_change : int, default=10
    With ``early_stopping``: epochs without improvement of the held-out
    MMD^2 before training stops. Unused otherwise.""",
    "early_stopping": """\
early_stopping : bool, default=False
    Set aside ``validation_fraction`` of the rows and stop when the maximum
    mean discrepancy between them and as many generated samples (fixed
    latent draws, Gaussian kernel of the held-out rows' median bandwidth)
    stops decreasing; the generator of the best epoch is kept (the
    discriminator keeps its last weights). ``validation_scores_`` holds
    minus that MMD^2.""",
}


@register_estimator
@document_parameters(extra=_DEFAULTS)
class GAN(SamplerMixin, NeuralUnsupervisedMixin, BaseNeuralEstimator):
    """Generative adversarial network: a generator and a discriminator trained together.

    The generator maps standard normal latent vectors (``n_components``
    wide) to samples; the discriminator scores samples, real against
    generated. Each batch of real rows gives ``n_critic`` discriminator
    steps (fresh generated samples each) and then one generator step.
    :meth:`sample` draws from the generator; :meth:`score_samples` is the
    discriminator's score of each row.

    Parameters
    ----------
    n_components : int, default=2
        Width of the latent space the generator maps from.
    generator_layer_sizes : array-like of int, default=(128, 128)
        ``architecture="mlp"``: the generator's hidden widths.
        ``architecture="conv"``: the channels of its upsampling stages.
    discriminator_layer_sizes : array-like of int, default=(128, 128)
        ``architecture="mlp"``: the discriminator's hidden widths.
        ``architecture="conv"``: the channels of its stride-2 convolutions.
    loss : {"non_saturating", "wasserstein_gp"}, default="non_saturating"
        ``"non_saturating"``: the discriminator is a logistic classifier
        (real = 1) and the generator maximizes ``log D(G(z))``.
        ``"wasserstein_gp"``: the discriminator is a Wasserstein critic with
        a gradient penalty of weight ``gp_weight``; use ``n_critic=5``
        with it, as its authors do.
    gp_weight : float, default=10.0
        Weight of the gradient penalty (``loss="wasserstein_gp"`` only).
    n_critic : int, default=1
        Discriminator steps per generator step.
    architecture : {"mlp", "conv"}, default="mlp"
        ``"mlp"``: fully connected networks on rows. ``"conv"``: a small
        convolutional pair (:class:`~sklears_neural.nn.gan.ConvGenerator`,
        :class:`~sklears_neural.nn.gan.ConvDiscriminator`) on images
        ``(n, C, H, W)``, or flat rows reshaped by ``input_shape``.
    activation : str or (str, dict), default="leaky_relu"
        Hidden activation of both networks (a name of ``ACTIVATIONS``).
    input_shape : tuple of int or None, default=None
        ``architecture="conv"``: ``(C, H, W)`` of one image, to which flat
        rows are reshaped; None: taken from 4-D X. Unused with "mlp".
    discriminator_learning_rate : float or None, default=None
        The discriminator's initial step size; None: ``learning_rate_init``.
        The ``learning_rate`` schedule (and warm-up) scales both step sizes
        by the same factor.
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    loss_curve_ : list of float
        The generator's mean loss per epoch (``-log sigmoid D(G(z))``, or
        ``-D(G(z))`` for the critic). Not an objective that falls
        steadily: it measures the generator against a discriminator that
        keeps learning.
    validation_scores_ : list of float or None
        With ``early_stopping``, minus the held-out MMD^2 per epoch.
    validation_loss_curve_ : list of float or None
        With ``early_stopping``, the held-out MMD^2 per epoch.
    n_features_in_ : int
        Values per sample seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    input_shape_ : tuple of int
        ``architecture="conv"``: ``(C, H, W)`` of one sample.
    module_ : torch.nn.Module
        The generator: latent ``(n, n_components)`` to samples.
    discriminator_ : torch.nn.Module
        The discriminator: samples to one raw score each.

    See Also
    --------
    sklearn.mixture.GaussianMixture : A density model that also samples.

    Notes
    -----
    :meth:`score_samples` is the discriminator's raw output: with
    ``loss="non_saturating"`` a logit, ``log(D / (1 - D))`` of the
    probability that the row is real, which for an optimal discriminator is
    ``log p_data(x) - log p_G(x)``; with ``"wasserstein_gp"`` the critic
    value, meaningful only up to a constant (differences between rows,
    and the mean over real rows minus that over generated ones, an
    estimate of the Wasserstein-1 distance). Neither is a likelihood.

    Early stopping has no validation loss to watch (the generator's loss
    is relative to a moving discriminator): it watches the maximum mean
    discrepancy between held-out rows and generated samples.

    Mixed precision (``precision="mixed"``) and L-BFGS are refused: the
    family computes its own gradients in a two-player step.

    The defaults were measured on standardized ``make_moons`` (1,000
    training rows, 500 held out): a gradient-boosting classifier tells 500
    samples from held-out rows with ROC AUC 0.57-0.65 over seeds 0-5 (0.5:
    indistinguishable), 20-45 s a fit on one CPU thread. See
    ``doc/generative/gan.md``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.gan import GAN
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> gan = GAN(max_iter=5, random_state=0).fit(X)
    >>> gan.sample(3, random_state=0).shape
    (3, 2)
    >>> gan.score_samples(X[:4]).shape
    (4,)
    """

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "generator_layer_sizes": ["array-like"],
        "discriminator_layer_sizes": ["array-like"],
        "loss": [StrOptions({"non_saturating", "wasserstein_gp"})],
        "gp_weight": [Interval(Real, 0, None, closed="left")],
        "n_critic": [Interval(Integral, 1, None, closed="left")],
        "architecture": [StrOptions({"mlp", "conv"})],
        "activation": [ResolvableName(ACTIVATIONS)],
        "input_shape": [None, list, tuple],
        "discriminator_learning_rate": [
            None, Interval(Real, 0, None, closed="neither"),
        ],
    }

    # The generator's loss is not a decreasing objective: never stop on it.
    _loss_tracks_progress = False

    _networks = {
        "module_": {"spec": "_module_spec_", "optimizer": "_optimizer",
                    "solver": "_optimizer_solver"},
        "discriminator_": {"spec": "_discriminator_spec_",
                           "optimizer": "_discriminator_optimizer",
                           "solver": "_discriminator_solver"},
    }

    def __init__(
        self,
        n_components=2,
        generator_layer_sizes=(128, 128),
        discriminator_layer_sizes=(128, 128),
        *,
        loss="non_saturating",
        gp_weight=10.0,
        n_critic=1,
        architecture="mlp",
        activation="leaky_relu",
        input_shape=None,
        discriminator_learning_rate=None,
        solver="adam",
        alpha=0.0,
        batch_size=64,
        learning_rate="cosine",
        learning_rate_init=0.001,
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
        beta_1=0.5,
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
        self.generator_layer_sizes = generator_layer_sizes
        self.discriminator_layer_sizes = discriminator_layer_sizes
        self.loss = loss
        self.gp_weight = gp_weight
        self.n_critic = n_critic
        self.architecture = architecture
        self.activation = activation
        self.input_shape = input_shape
        self.discriminator_learning_rate = discriminator_learning_rate
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

    # -- architecture ----------------------------------------------------------------

    def _input_kind(self):
        if self.architecture == "conv":
            return ArrayInput(input_shape=self.input_shape, spatial_dims=(2,))
        return TABULAR

    def _layer_sizes(self, name):
        sizes = getattr(self, name)
        sizes = [sizes] if np.ndim(sizes) == 0 else list(sizes)
        if not all(isinstance(s, (Integral, np.integer)) and not isinstance(s, bool)
                   and s >= 1 for s in sizes):
            raise ValueError(
                f"{name} of {type(self).__name__} must hold integers >= 1, got "
                f"{getattr(self, name)!r}."
            )
        if self.architecture == "conv" and not sizes:
            raise ValueError(
                f"architecture='conv' needs at least one stage in {name}; got none."
            )
        return [int(s) for s in sizes]

    def _build_module(self, n_features_in, n_outputs):
        if not self._is_stochastic():
            raise ValueError(
                "GAN trains two networks against each other with stochastic "
                f"steps; solver={self.solver!r} (L-BFGS) cannot. Use solver='adam' "
                "or another stochastic solver."
            )
        sizes = self._layer_sizes("generator_layer_sizes")
        activation = ACTIVATIONS.to_json(self.activation)
        if self.architecture == "conv":
            return ModuleSpec(ConvGenerator, {
                "n_components": int(self.n_components),
                "input_shape": [int(d) for d in self.input_shape_],
                "channels": sizes, "activation": activation,
            })
        return ModuleSpec(MLP, {
            "n_inputs": int(self.n_components), "hidden_layer_sizes": sizes,
            "n_outputs": int(n_outputs), "activation": activation,
        })

    def _build_discriminator(self, n_features_in):
        sizes = self._layer_sizes("discriminator_layer_sizes")
        activation = ACTIVATIONS.to_json(self.activation)
        if self.architecture == "conv":
            return ModuleSpec(ConvDiscriminator, {
                "input_shape": [int(d) for d in self.input_shape_],
                "channels": sizes, "activation": activation,
            })
        return ModuleSpec(MLP, {
            "n_inputs": int(n_features_in), "hidden_layer_sizes": sizes,
            "n_outputs": 1, "activation": activation,
        })

    def _same_architecture(self, incremental):
        same = super()._same_architecture(incremental)
        if same and self._build_discriminator(self.n_features_in_) != (
            self._discriminator_spec_
        ):
            if incremental:
                raise ValueError(
                    "partial_fit cannot continue: discriminator_layer_sizes or "
                    "activation changed since the model was fitted. Set them back, "
                    "or call fit to train the new networks from scratch."
                )
            warnings.warn(
                "warm_start=True, but the discriminator's parameters changed since "
                "the last fit: new networks were built, and the fitted weights were "
                "not kept.", UserWarning,
            )
            return False
        return same

    # -- fitting -----------------------------------------------------------------------

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        if reset:
            # Samples come back in X's layout: flat rows, or images.
            self._fitted_on_flat_rows = (self.architecture == "mlp"
                                         or fitted_on_flat_rows(X))
        X, _, sample_weight = super()._validate_training_data(
            X, y, sample_weight, reset=reset, incremental=incremental, classes=classes
        )
        # No targets: real rows are the discriminator's input only (an empty
        # column block keeps the core's splitting and batching unchanged,
        # and sparse X is never made dense whole).
        return X, np.empty((X.shape[0], 0)), sample_weight

    def _initialize(self, n_features, targets, device, dtype):
        super()._initialize(n_features, targets, device, dtype)
        spec = self._build_discriminator(n_features)
        discriminator = spec.build(generator=self._generator)
        if hasattr(discriminator, "reset_parameters"):
            discriminator.reset_parameters(generator=self._generator)
        self.discriminator_ = discriminator.to(device=device, dtype=dtype)
        self._discriminator_spec_ = spec
        self._discriminator_optimizer = None
        self._discriminator_solver = None

    def _fit_stochastic(self, X, targets, sample_weight, incremental, device, policy):
        if policy.autocast_dtype is not None:
            raise ValueError(
                "GAN computes its own gradients in a two-player step, which does "
                "not run under autocast: precision='mixed' is not supported. Use "
                "precision='float32' or 'float64'."
            )
        discriminator = self.discriminator_.to(device=device, dtype=policy.param_dtype)
        solver = SOLVERS.canonical(self.solver)
        if (self._discriminator_optimizer is None
                or self._discriminator_solver != solver):
            self._discriminator_optimizer = make_optimizer(discriminator, self)
            self._discriminator_solver = solver
        else:
            # Moves the kept optimizer state along with the parameters.
            self._discriminator_optimizer.load_state_dict(
                self._discriminator_optimizer.state_dict()
            )
        with modes.training(discriminator), warnings.catch_warnings():
            # No convergence criterion: every fit runs max_iter epochs.
            warnings.filterwarnings("ignore", message=_MAX_ITER_WARNING,
                                    category=ConvergenceWarning)
            discriminator.train()
            super()._fit_stochastic(X, targets, sample_weight, incremental, device,
                                    policy)

    def _train_step(self, policy):
        generator, discriminator = self.module_, self.discriminator_
        d_optimizer = self._discriminator_optimizer
        g_group, d_groups = self._optimizer.param_groups[0], d_optimizer.param_groups
        # The discriminator's step size follows the generator's schedule:
        # its base value times the generator's current factor.
        d_base = float(self.learning_rate_init
                       if self.discriminator_learning_rate is None
                       else self.discriminator_learning_rate)
        g_base = float(self.learning_rate_init)
        g_params = list(generator.parameters())
        d_params = [p for p in discriminator.parameters() if p.requires_grad]
        g_penalized = penalized_parameters(generator)
        d_penalized = penalized_parameters(discriminator)
        alpha, l1_ratio = float(self.alpha), float(self.l1_ratio)
        loss, gp_weight, n_critic = self.loss, float(self.gp_weight), int(self.n_critic)
        clip_norm, clip_value = self.clip_grad_norm, self.clip_grad_value
        latent = int(self.n_components)
        rng = self._generator

        def penalty(params, n):
            if not (alpha and params):
                return 0
            return weight_penalty(params, alpha, l1_ratio) / n

        def step(X, y, w):
            n = X.shape[0]
            d_lr = d_base * g_group["lr"] / g_base
            for group in d_groups:
                group["lr"] = d_lr
            for _ in range(n_critic):
                z = _randn((n, latent), rng, X)
                with torch.no_grad():
                    fake = generator(z)
                d_loss = discriminator_loss(loss, discriminator(X),
                                            discriminator(fake), w)
                if loss == "wasserstein_gp":
                    eps = _rand((n,), rng, X)
                    d_loss = d_loss + gp_weight * gradient_penalty(discriminator, X,
                                                                   fake, eps)
                d_loss = d_loss + penalty(d_penalized, n)
                for p in d_params:
                    p.grad = None
                d_loss.backward(inputs=d_params)
                if clip_value is not None:
                    torch.nn.utils.clip_grad_value_(d_params, clip_value)
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(d_params, clip_norm)
                d_optimizer.step()
            z = _randn((n, latent), rng, X)
            g_loss = generator_loss(loss, discriminator(generator(z)))
            # The trainer clips and steps the generator's gradients.
            (g_loss + penalty(g_penalized, n)).backward(inputs=g_params)
            return g_loss

        return step

    def _evaluator(self, X_val, y_val, w_val, device, dtype):
        """Minus the MMD^2 between held-out rows and generated samples.

        The latent draws are the same at every epoch (a generator seeded
        with 0, not the fit's), so epochs are compared on equal terms and a
        resumed fit evaluates as the uninterrupted one.
        """
        rows = X_val[:_MMD_ROWS]
        rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
        real = torch.as_tensor(rows.reshape(rows.shape[0], -1), dtype=torch.float64)
        squared = torch.cdist(real, real).pow(2)
        n = real.shape[0]
        bandwidth2 = squared[torch.triu_indices(n, n, 1).unbind()].median().clamp_min(
            1e-12
        )
        k_real = torch.exp(-squared / bandwidth2)
        real_term = (k_real.sum() - k_real.diagonal().sum()) / (n * (n - 1))

        def evaluate():
            generated = torch.as_tensor(
                self._sample(n, torch.Generator().manual_seed(0))
            ).detach().cpu().double().reshape(n, -1)
            k_fake = torch.exp(-torch.cdist(generated, generated).pow(2) / bandwidth2)
            k_cross = torch.exp(-torch.cdist(generated, real).pow(2) / bandwidth2)
            mmd2 = (real_term
                    + (k_fake.sum() - k_fake.diagonal().sum()) / (n * (n - 1))
                    - 2 * k_cross.mean()).item()
            return {"valid_loss": mmd2, "valid_score": -mmd2}

        def evaluate_quietly():
            with torch.inference_mode():
                return evaluate()

        return evaluate_quietly

    # -- generating and scoring --------------------------------------------------------

    def _sample(self, n_samples, generator):
        module = self.module_
        parameter = next(module.parameters())
        z = torch.randn((n_samples, int(self.n_components)), generator=generator,
                        device=generator.device, dtype=parameter.dtype)
        return module(z.to(parameter.device))

    def score_samples(self, X):
        """The discriminator's raw score of each row: greater is more "real".

        A logit of the probability that the row is real
        (``loss="non_saturating"``), or the Wasserstein critic's value
        (``"wasserstein_gp"``, meaningful up to a constant). Not a
        log-likelihood; see the class Notes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "discriminator_")
        # The prediction path of every input kind, on the discriminator: its
        # float64 copy for a few rows, chunks in evaluation mode beyond.
        outputs = self._raw_outputs(X, forward=lambda module, inputs: module(inputs),
                                    module=self.discriminator_)
        return outputs[:, 0]


def _randn(shape, generator, like):
    """Standard normal draws from ``generator``, on ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator, device=generator.device,
                       dtype=like.dtype).to(like.device)


def _rand(shape, generator, like):
    """U(0, 1) draws from ``generator``, on ``like``'s device and dtype."""
    return torch.rand(shape, generator=generator, device=generator.device,
                      dtype=like.dtype).to(like.device)
