"""Variational autoencoder: VAE.

:class:`VAE` trains a :class:`~sklears_neural.nn.autoencoder.VariationalAutoencoder`
by maximizing the evidence lower bound (ELBO) with reparameterized draws
from the fit's generator, so ``random_state`` fixes a fit and resumes are
exact. ``transform`` gives the posterior mean, ``inverse_transform`` the
decoder mean, ``sample`` draws from the model, and ``score_samples`` is the
per-sample ELBO in nats, or the importance-weighted bound (IWAE) with
``n_importance_samples > 1``: both lower bounds on ``log p(x)``, comparable
with the log-densities of ``KernelDensity``, ``GaussianMixture`` or a flow.
"""

import hashlib
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import StrOptions

from sklears_neural.core._compat import Interval, PositiveIntSequence, ResolvableName
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.generative import SamplerMixin
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.noise import _randn
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.inputs import DENSE_TABULAR
from sklears_neural.core.tasks import NeuralUnsupervisedMixin
from sklears_neural.models.autoencoder import (
    layer_sizes,
    run_on_codes,
    training_objective,
)
from sklears_neural.nn.autoencoder import VariationalAutoencoder

__all__ = ["VAE"]

#: Draws of ``eps`` per sample in ``score_samples``: the ELBO's
#: reconstruction term averages them (the KL term is exact); the importance
#: weighted bound with K draws averages ``N_SCORE_DRAWS // K`` independent
#: K-draw estimates (at least one).
N_SCORE_DRAWS = 256
#: Draws per evaluation: ``score_samples`` loops over groups of draws so
#: that a chunk of rows times the draws stays bounded in memory.
_DRAW_GROUP_VALUES = 2**21
#: Seed of the draws of ``score_samples``, combined with each row's hash.
SCORE_SEED = 0


def row_draws(x, n_draws, n_latent):
    """Standard normal draws ``(n_draws, n_rows, n_latent)`` seeded by each row's values.

    Each row seeds its own generator with a hash of its values (rounded to
    float32, so the float64 and float32 prediction paths agree): a score
    is deterministic, does not depend on the rows beside it, and the draws
    of different rows are independent, so errors average out over a data
    set. (One set of draws shared by all rows did not: its error moved
    every score the same way, and a mean 256-draw importance weighted bound
    came out 0.013 nats above the exact log-likelihood of a linear VAE.)
    """
    rows = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((n_draws, len(rows), n_latent))
    for i, row in enumerate(rows):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8).digest()
        key = int.from_bytes(digest, "little")
        out[:, i] = np.random.default_rng([SCORE_SEED, key]).standard_normal(
            (n_draws, n_latent)
        )
    return torch.from_numpy(out).to(x)


@register_estimator
@document_parameters
class VAE(ClassNamePrefixFeaturesOutMixin, SamplerMixin, NeuralUnsupervisedMixin,
          TransformerMixin, BaseNeuralEstimator):
    """Variational autoencoder (Kingma and Welling, 2014).

    A latent-variable density model ``p(x) = int p(x|z) p(z) dz`` with
    ``p(z) = N(0, I)`` of ``n_components`` dimensions, a neural decoder
    ``p(x|z)`` and a neural Gaussian encoder ``q(z|x)``, trained by
    maximizing the evidence lower bound (ELBO) on ``log p(x)``.

    Parameters
    ----------
    n_components : int, default=2
        Dimension of the latent space (the output of ``transform``).
    hidden_layer_sizes : array-like of int or int, default=(64, 64)
        Widths of the encoder's hidden layers; the decoder mirrors them.
    activation : str, default="relu"
        Hidden activation (the names of the MLPs).
    decoder : {"gaussian", "bernoulli"}, default="gaussian"
        The likelihood ``p(x|z)``. "gaussian": ``N(mean(z), diag
        sigma^2)`` with one learned standard deviation per feature (not
        depending on ``z``), so every score is a log-density in nats of
        continuous X. "bernoulli": independent Bernoulli values with
        probabilities ``sigmoid(logits(z))``, for X in [0, 1] (a
        log-probability of binary X; for values between 0 and 1 the
        cross-entropy is not a normalized density).
    beta : float, default=1.0
        Weight of the KL term in the training objective (beta-VAE; above 1
        it favours disentangled, below 1 sharper reconstructions).
        ``score_samples`` always reports the true bound (``beta=1``).
    n_importance_samples : int, default=1
        1: ``score_samples`` is the ELBO. K > 1: the importance-weighted
        bound of Burda et al. (2016) with K draws, tighter than the ELBO and
        still below ``log p(x)``.
    batch_size : int or "auto", default="auto"
        Samples per minibatch; "auto" is ``min(64, n_samples)``, smaller
        than the MLPs' ``min(200, n_samples)``: more steps per epoch (see
        the Notes).
    learning_rate_init : float, default=0.003
        Initial step size (three times the MLPs').
    max_iter : int, default=100
        Epochs; the ``tol`` rule usually ends training earlier.
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Mean held-out ELBO per epoch with ``early_stopping``.
    validation_loss_curve_ : list of float or None
        Minus the mean held-out ELBO per epoch with ``early_stopping``.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    module_ : VariationalAutoencoder
        The trained encoder and decoder (``encode``, ``decode``,
        ``log_likelihood``, ``elbo``, ``log_weights``).

    See Also
    --------
    Autoencoder : A deterministic autoencoder.
    sklearn.mixture.GaussianMixture : A density model with ``sample`` and exact scores.

    Notes
    -----
    Training minimizes, per sample, ``-E_q[log p(x|z)] + beta *
    KL(q(z|x) || p(z))``: the KL term in closed form, the expectation with
    one reparameterized draw ``z = mu(x) + sigma(x) * eps``, ``eps`` from
    the fit's generator.

    ``score_samples`` uses ``N_SCORE_DRAWS`` (256) draws of ``eps`` for
    the ELBO's expectation; with ``n_importance_samples=K`` it averages
    ``256 // K`` (at least one) estimates of the bound ``log (1/K) sum_k
    p(x, z_k) / q(z_k|x)``, each from K draws. Each sample's draws come
    from a generator seeded with a hash of its values, so scores are
    deterministic, a sample's score does not depend on the rows beside it,
    and the draws of different samples are independent.

    The Gaussian decoder's variance is learned (one value per feature):
    with a fixed unit variance the ELBO would not be a bound on the
    density of the data at its own scale, and its value would depend on
    an arbitrary choice. Its log standard deviation is kept above -7.

    ``sample`` draws ``z ~ N(0, I)`` and then ``x ~ p(x|z)`` (observation
    noise included; 0/1 values for the Bernoulli decoder); use
    ``inverse_transform`` of normal draws for decoder means.

    ``solver="lbfgs"`` is refused: the objective is random.

    The defaults of ``batch_size`` ("auto": 64), ``learning_rate_init`` (0.003)
    and ``max_iter`` (100) were measured on standardized ``make_moons``
    (1,000 training points): with the MLPs' (200 rows, 0.001) the ``tol``
    rule ended training after ~60 epochs, 300 steps, with the decoder still
    ignoring part of the latent space (classifier two-sample AUC of the
    samples 0.87); with these, 60-85 epochs and AUC 0.73-0.76 over seeds
    0-2 (see ``doc/generative/autoencoders.md``).

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from sklears_neural.models.vae import VAE
    >>> X, _ = make_moons(300, noise=0.05, random_state=0)
    >>> vae = VAE(max_iter=5, random_state=0).fit(X)
    >>> vae.transform(X[:2]).shape
    (2, 2)
    >>> vae.sample(3, random_state=0).shape
    (3, 2)
    """

    # Small steps: with 200-row batches the moons samples were worse.
    _auto_batch_size = 64

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [PositiveIntSequence()],
        "activation": [ResolvableName(ACTIVATIONS)],
        "decoder": [StrOptions({"gaussian", "bernoulli"})],
        "beta": [Interval(Real, 0, None, closed="left")],
        "n_importance_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        n_components=2,
        hidden_layer_sizes=(64, 64),
        activation="relu",
        *,
        decoder="gaussian",
        beta=1.0,
        n_importance_samples=1,
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
        augment=None,
    ):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.decoder = decoder
        self.beta = beta
        self.n_importance_samples = n_importance_samples
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
        return DENSE_TABULAR


    def _validate_training_data(self, X, y, sample_weight, **kwargs):
        X, targets, sample_weight = super()._validate_training_data(
            X, y, sample_weight, **kwargs
        )
        outside = np.min(X, initial=0) < 0 or np.max(X, initial=0) > 1
        if self.decoder == "bernoulli" and outside:
            raise ValueError(
                "decoder='bernoulli' models values in [0, 1], but X has values outside "
                "it. Scale X to [0, 1] (e.g. MinMaxScaler), or use decoder='gaussian'."
            )
        return X, targets, sample_weight

    def _build_module(self, n_features_in, n_outputs):
        if not self._is_stochastic():
            raise ValueError(
                "solver='lbfgs' needs a deterministic objective, but the VAE's ELBO is "
                "estimated with random draws. Use solver='adam' or 'sgd'."
            )
        self._n_features_out = int(self.n_components)
        return ModuleSpec(VariationalAutoencoder, {
            "n_inputs": int(n_features_in),
            "hidden_layer_sizes": layer_sizes(self.hidden_layer_sizes),
            "n_components": int(self.n_components),
            "activation": ACTIVATIONS.to_json(self.activation),
            "decoder": self.decoder,
        })

    def _objective(self, module=None):
        generator, beta = self._generator, float(self.beta)
        n_latent = int(self.n_components)

        def per_sample(module, X, y):
            if X.dtype in (torch.float16, torch.bfloat16):
                X = X.float()
            # One reparameterized draw per sample, from the fit's generator.
            eps = _randn((1, X.shape[0], n_latent), X, generator)
            return -module.elbo(X, eps, beta), None

        return training_objective(self, self.module_ if module is None else module,
                                  per_sample)

    def _evaluator(self, X_val, y_val, w_val, device, dtype):
        # Early stopping watches the held-out ELBO, with the fixed draws of
        # score_samples (the fit's generator is not touched).
        data = self._make_dataset(X_val, y_val, w_val, dtype=dtype, device=device)

        def evaluate():
            module = self.module_
            with torch.inference_mode():
                scores = torch.cat([
                    self._bound(module, data.batch(rows)[0]) for rows in data.chunks()
                ]).double()
                if data.w is None:
                    score = scores.mean()
                else:
                    w = data.w.double()
                    score = (scores * w).sum() / w.sum()
            score = score.item()
            return {"valid_loss": -score, "valid_score": score}

        return evaluate

    def _bound(self, module, X):
        """Per-sample ELBO (or IWAE bound) of a batch, with each row's own draws."""
        K = int(self.n_importance_samples)
        if K == 1:
            K, replicates = N_SCORE_DRAWS, 1
        else:
            replicates = max(1, N_SCORE_DRAWS // K)
        eps = row_draws(X, K * replicates, int(self.n_components))
        eps = eps.reshape(replicates, K, *eps.shape[1:])
        # Draws per module call, so that draws x rows stays bounded.
        per_call = max(1, _DRAW_GROUP_VALUES // max(1, X.shape[0] * X.shape[1]))
        total = torch.zeros(X.shape[0], dtype=X.dtype, device=X.device)
        if self.n_importance_samples == 1:
            for start in range(0, K, per_call):
                group = eps[0, start:start + per_call]
                total += module.elbo(X, group) * group.shape[0]
            return total / K
        for r in range(replicates):
            log_w = torch.cat([module.log_weights(X, eps[r, start:start + per_call])
                               for start in range(0, K, per_call)])
            total += torch.logsumexp(log_w, dim=0) - np.log(K)
        return total / replicates

    def _sample(self, n_samples, generator):
        module = self.module_
        parameter = next(module.parameters())
        like = torch.empty((), dtype=parameter.dtype, device=parameter.device)
        z = _randn((n_samples, int(self.n_components)), like, generator)
        n_features = int(self.n_features_in_)
        if self.decoder == "bernoulli":
            noise = torch.rand((n_samples, n_features), generator=generator,
                               dtype=like.dtype, device=generator.device).to(like.device)
        else:
            noise = _randn((n_samples, n_features), like, generator)
        return module.sample_x(z, noise)

    # -- transformer and density ---------------------------------------------------

    def transform(self, X):
        """Posterior means ``E[z|x]`` of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
        """
        return self._raw_outputs(X, forward=lambda module, x: module.encode(x)[0])

    def inverse_transform(self, X):
        """Decoder means ``E[x|z]`` of latent points.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Latent points (e.g. the output of ``transform``).

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features_in_)
            Gaussian means, or Bernoulli probabilities.
        """
        return run_on_codes(self, X, lambda module, z: module.decode(z))

    def score_samples(self, X):
        """Per-sample lower bound on ``log p(x)``, in nats.

        The ELBO with ``n_importance_samples=1``, else the importance
        weighted bound with that many draws (see the Notes).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return self._raw_outputs(X, forward=lambda m, x: self._bound(m, x)[:, None])[:, 0]

    def score(self, X, y=None, sample_weight=None):
        """Mean per-sample bound on ``log p(x)`` (see ``score_samples``).

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64"]
        tags.non_deterministic = False
        return tags
