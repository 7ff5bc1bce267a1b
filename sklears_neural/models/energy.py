"""Energy-based models: EnergyBasedModel.

An MLP gives an energy ``E(x)`` (one output), and the model is the
unnormalized density ``p(x) ~ exp(-E(x))``. Training is contrastive
divergence: each batch lowers the energy of the data and raises that of
negatives drawn by a short MCMC run (:mod:`sklears_neural.nn.energy`:
Langevin, HMC or Gibbs) from noise or from a persistent replay buffer, on
the shared training core (solvers, schedules, callbacks, early stopping,
``partial_fit``, exact resume, save/load, pickle).
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions

from sklears_neural.core._compat import Interval, PositiveIntSequence, ResolvableName
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.generative import SamplerMixin, network_device
from sklears_neural.core.inputs import DENSE_TABULAR
from sklears_neural.core.layers import MLP, ModuleSpec
from sklears_neural.core.regularization import penalized_parameters, weight_penalty
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.tasks import NeuralUnsupervisedMixin
from sklears_neural.nn.energy import gibbs, hmc, langevin

__all__ = ["EnergyBasedModel"]

#: Fraction of the chains taken from the replay buffer that restart from
#: noise at each step (Du & Mordatch, 2019), so the buffer keeps exploring.
REINIT_FRACTION = 0.05


_ARCHITECTURE = {
    "hidden_layer_sizes": """\
hidden_layer_sizes : array-like of shape (n_layers - 2,) or int, default=(64, 64)
    Widths of the hidden layers of the energy network; a linear layer to
    one output (the energy) follows.""",
    "activation": """\
activation : str or (str, dict), default="silu"
    Hidden activation. A smooth one ("silu", "softplus", "tanh", "elu")
    gives Langevin and HMC a continuous gradient field; "relu" works but
    its energy is piecewise linear.""",
    "sampler": """\
sampler : {"langevin", "hmc", "gibbs"}, default="langevin"
    MCMC that draws the negatives in training and the samples of
    :meth:`sample`. "langevin": unadjusted Langevin dynamics; "hmc":
    Hamiltonian Monte Carlo (leapfrog + Metropolis); "gibbs": binary
    ``{0, 1}`` data only, one unit at a time from its conditional (a sweep
    costs ``2 * n_features`` network evaluations per chain).""",
    "n_mcmc_steps": """\
n_mcmc_steps : int, default=30
    MCMC steps per training batch (Langevin steps, HMC trajectories or
    Gibbs sweeps). :meth:`sample` runs ``n_sample_steps``.""",
    "step_size": """\
step_size : float, default=0.01
    Langevin gradient step, or HMC leapfrog step. Unused by Gibbs.""",
    "noise_scale": """\
noise_scale : float or None, default=None
    Standard deviation of the Langevin noise; None: ``sqrt(2 * step_size)``,
    the value for which ``exp(-E)`` is the stationary law. Smaller values
    (the "decoupled" Langevin of many EBM papers) sample a colder model.""",
    "n_leapfrog_steps": """\
n_leapfrog_steps : int, default=5
    Leapfrog steps per HMC trajectory.""",
    "persistent": """\
persistent : bool, default=True
    Start the negatives from a replay buffer of earlier chains (persistent
    contrastive divergence; 5% of them restart from noise each step), not
    from noise each time.""",
    "buffer_size": """\
buffer_size : int, default=10000
    Chains kept in the replay buffer (``persistent=True``).""",
    "alpha_energy": """\
alpha_energy : float, default=0.1
    Weight of the energy-magnitude penalty ``mean(E(data)^2) +
    mean(E(negatives)^2)``, which keeps energies near 0 (only their
    differences define the model).""",
    "n_sample_steps": """\
n_sample_steps : int or None, default=None
    MCMC steps of :meth:`sample`, from noise; None: ``10 * n_mcmc_steps``
    (training chains from the replay buffer have run far longer than one
    batch's steps).""",
    "batch_size": """\
batch_size : int or "auto", default="auto"
    Rows per training batch (and chains per batch). "auto" is
    ``min(64, n_samples)`` here, smaller than the MLPs' ``min(200,
    n_samples)``: contrastive divergence needs many updates, and an epoch
    of 1,000 rows then makes 16 of them.""",
    "learning_rate_init": """\
learning_rate_init : float, default=0.01
    Initial step size (stochastic solvers). Ten times the MLPs': measured
    on standardized moons, 0.001 and 0.003 left the energy far blurrier
    after the same 100 epochs (see the doc page).""",
    "max_iter": """\
max_iter : int, default=100
    Epochs. Each costs ``n_mcmc_steps`` sampler steps per batch.""",
}


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class EnergyBasedModel(SamplerMixin, NeuralUnsupervisedMixin, BaseNeuralEstimator):
    """Energy-based model: an MLP energy trained by contrastive divergence.

    The density is ``p(x) = exp(-E(x)) / Z`` with ``E`` an MLP of one
    output and ``Z`` unknown. Each training batch lowers the energy of the
    data and raises the energy of negatives drawn from the current model
    by a short MCMC run (``sampler``), started from noise or from a
    persistent replay buffer.

    Parameters
    ----------
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    n_features_in_ : int
        Features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    data_min_ : ndarray of shape (n_features_in_,)
        Per-feature minimum of the first fit's X.
    data_max_ : ndarray of shape (n_features_in_,)
        Per-feature maximum. Chains start from noise uniform on the box
        ``[data_min_, data_max_]`` widened by 10% each side ("gibbs": fair
        coin flips).
    acceptance_rate_ : float or None
        With ``sampler="hmc"``: the acceptance rate of the last training
        batch's trajectories; None otherwise.
    module_ : MLP
        The energy network: ``module_(x)[:, 0]`` is ``E(x)``.

    See Also
    --------
    sklears_neural.nn.energy : The samplers, usable on any energy.
    BernoulliRBM : An energy model with tractable conditionals.

    Notes
    -----
    The loss of a batch (weights ``w`` on the data) is

    .. math::

        L = \\bar E_w(x^+) - \\bar E(x^-)
            + \\alpha_E\\,(\\overline{E_w(x^+)^2} + \\overline{E(x^-)^2})
            + \\text{alpha penalty},

    with negatives ``x^-`` from ``n_mcmc_steps`` of the sampler; its
    gradient is the contrastive-divergence estimate of the log-likelihood
    gradient. The negatives are detached: no gradient flows through the
    chains. Every random draw (starting noise, buffer indices, restarts,
    Langevin noise, HMC momenta and Metropolis tests, Gibbs coins) comes
    from the fit's generator, so ``random_state`` fixes a fit and a
    checkpoint resumes it exactly; the replay buffer is part of the fitted
    state (pickled and saved).

    ``score_samples`` is ``-E(x)``: an unnormalized log-density, correct
    up to the unknown constant ``-log Z``. It ranks samples (anomaly
    detection, held-out data against noise), and differences between two
    samples are log-density ratios; it is not comparable across models.
    ``score`` is its mean. With ``early_stopping``, the held-out score is
    minus the gap ``mean E(held-out) - mean E(chains)``, the chains being
    the replay buffer (or the last batch's negatives): it falls when the
    model overfits its training rows.

    The training loss is no measure of fit (it hovers near 0 when the
    chains sample the model well), so without ``early_stopping`` the
    ``tol`` rule does not apply: training runs ``max_iter`` epochs.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.energy import EnergyBasedModel
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2))
    >>> ebm = EnergyBasedModel((16,), max_iter=2, random_state=0).fit(X)
    >>> ebm.score_samples(X[:3]).shape
    (3,)
    >>> ebm.sample(4, random_state=0).shape
    (4, 2)
    """

    # The contrastive loss is no progress measure: no tol rule on it.
    _loss_tracks_progress = False
    _auto_batch_size = 64

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "hidden_layer_sizes": [PositiveIntSequence()],
        "activation": [ResolvableName(ACTIVATIONS)],
        "sampler": [StrOptions({"langevin", "hmc", "gibbs"})],
        "n_mcmc_steps": [Interval(Integral, 1, None, closed="left")],
        "step_size": [Interval(Real, 0, None, closed="neither")],
        "noise_scale": [None, Interval(Real, 0, None, closed="left")],
        "n_leapfrog_steps": [Interval(Integral, 1, None, closed="left")],
        "persistent": ["boolean"],
        "buffer_size": [Interval(Integral, 1, None, closed="left")],
        "alpha_energy": [Interval(Real, 0, None, closed="left")],
        "n_sample_steps": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        activation="silu",
        *,
        sampler="langevin",
        n_mcmc_steps=30,
        step_size=0.01,
        noise_scale=None,
        n_leapfrog_steps=5,
        persistent=True,
        buffer_size=10000,
        alpha_energy=0.1,
        n_sample_steps=None,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.01,
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.sampler = sampler
        self.n_mcmc_steps = n_mcmc_steps
        self.step_size = step_size
        self.noise_scale = noise_scale
        self.n_leapfrog_steps = n_leapfrog_steps
        self.persistent = persistent
        self.buffer_size = buffer_size
        self.alpha_energy = alpha_energy
        self.n_sample_steps = n_sample_steps
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

    # -- the network -------------------------------------------------------------

    def _build_module(self, n_features_in, n_outputs):
        if not self._is_stochastic():
            raise ValueError(
                "solver='lbfgs' needs a deterministic objective, but the negatives "
                "of contrastive divergence are random MCMC draws. Use solver='adam' "
                "or 'sgd'."
            )
        sizes = self.hidden_layer_sizes
        sizes = [int(sizes)] if isinstance(sizes, Integral) else [int(n) for n in sizes]
        return ModuleSpec(
            MLP,
            {
                "n_inputs": int(n_features_in),
                "hidden_layer_sizes": sizes,
                "n_outputs": 1,
                "activation": ACTIVATIONS.to_json(self.activation),
            },
        )

    def _input_kind(self):
        return DENSE_TABULAR

    def _n_outputs_for(self, targets):
        return 1

    def _loss(self, output, target):
        # The per-sample "loss" is the energy: score_samples is -E(x), and
        # held-out loss is the mean held-out energy (see _validation_score).
        return output[:, 0]

    def _mean_loss(self, output, target):
        return output[:, 0].mean()

    # -- data --------------------------------------------------------------------

    def _validate_training_data(self, X, y, sample_weight, *, reset, incremental,
                                classes):
        X, targets, sample_weight = super()._validate_training_data(
            X, y, sample_weight, reset=reset, incremental=incremental, classes=classes
        )
        if self.sampler == "gibbs":
            if not np.all((X == 0) | (X == 1)):
                raise ValueError(
                    "sampler='gibbs' samples binary units: X must hold only 0 and 1. "
                    "Binarize X (e.g. sklearn.preprocessing.Binarizer), or use "
                    "sampler='langevin' or 'hmc' for real-valued data."
                )
        return X, targets, sample_weight

    def _initialize(self, n_features, targets, device, dtype):
        super()._initialize(n_features, targets, device, dtype)
        self.data_min_ = np.min(targets, axis=0).astype(np.float64)
        self.data_max_ = np.max(targets, axis=0).astype(np.float64)

    def _reset_training_state(self):
        super()._reset_training_state()
        self._chains = None
        self.acceptance_rate_ = None

    # -- MCMC --------------------------------------------------------------------

    def _noise(self, n, generator, like):
        """``n`` starting chains: uniform on the widened data box, or coin flips."""
        shape = (n, self.n_features_in_)
        u = torch.rand(shape, generator=generator, dtype=like.dtype,
                       device=generator.device).to(like.device)
        if self.sampler == "gibbs":
            return (u < 0.5).to(like.dtype)
        low = torch.as_tensor(self.data_min_, dtype=like.dtype, device=like.device)
        high = torch.as_tensor(self.data_max_, dtype=like.dtype, device=like.device)
        margin = 0.1 * (high - low) + 1e-3
        return (low - margin) + u * (high - low + 2 * margin)

    def _run_chains(self, module, x, generator, n_steps):
        """Run the sampler on ``E = module(x)[:, 0]``: ``(chains, acceptance rate)``.

        The rate is None except for HMC.
        """
        forward = self._forward

        def energy(z):
            return forward(module, z)[:, 0]

        if self.sampler == "langevin":
            return langevin(energy, x, generator, n_steps=n_steps,
                            step_size=float(self.step_size),
                            noise_scale=self.noise_scale), None
        if self.sampler == "hmc":
            return hmc(energy, x, generator, n_steps=n_steps,
                       step_size=float(self.step_size),
                       n_leapfrog_steps=int(self.n_leapfrog_steps))
        return gibbs(energy, x, generator, n_steps=n_steps), None

    def _negatives(self, module, X):
        """Negatives for a batch ``X``: MCMC from the buffer or from noise."""
        generator = self._generator
        n = X.shape[0]
        if not self.persistent:
            start = self._noise(n, generator, X)
        else:
            if self._chains is None:
                self._chains = self._noise(
                    int(self.buffer_size), generator, X
                ).cpu().numpy()
            size = self._chains.shape[0]
            index = torch.randint(size, (n,), generator=generator, device=generator.device)
            index = index.cpu()
            start = torch.as_tensor(self._chains[index.numpy()]).to(
                device=X.device, dtype=X.dtype
            )
            restart = torch.rand((n,), generator=generator, dtype=X.dtype,
                                 device=generator.device).to(X.device) < REINIT_FRACTION
            start = torch.where(restart[:, None], self._noise(n, generator, X), start)
        negatives, self.acceptance_rate_ = self._run_chains(
            module, start, generator, int(self.n_mcmc_steps)
        )
        chains = negatives.detach().cpu().numpy()
        if self.persistent:
            # A new array, not an in-place write: the rollback of a failed fit
            # keeps the buffer it saved.
            buffer = self._chains.copy()
            buffer[index.numpy()] = chains.astype(buffer.dtype)
            self._chains = buffer
        else:
            self._chains = chains
        return negatives

    # -- training ----------------------------------------------------------------

    def _objective(self, module=None):
        forward = self._forward
        alpha = float(self.alpha)
        alpha_energy = float(self.alpha_energy)
        l1_ratio = float(self.l1_ratio)
        penalized = penalized_parameters(self.module_ if module is None else module)

        def objective(module, X, y, w):
            negatives = self._negatives(module, X)
            e_pos = forward(module, X)[:, 0]
            e_neg = forward(module, negatives)[:, 0]
            if e_pos.dtype in (torch.float16, torch.bfloat16):
                # Mixed precision: the loss itself is computed in float32.
                e_pos, e_neg = e_pos.float(), e_neg.float()
            if w is None:
                denominator = e_pos.shape[0]
                pos, pos2 = e_pos.mean(), e_pos.pow(2).mean()
            else:
                denominator = w.sum()
                pos = (e_pos * w).sum() / denominator
                pos2 = (e_pos.pow(2) * w).sum() / denominator
            loss = pos - e_neg.mean()
            if alpha_energy:
                loss = loss + alpha_energy * (pos2 + e_neg.pow(2).mean())
            if alpha and penalized:
                loss = loss + weight_penalty(penalized, alpha, l1_ratio) / denominator
            return loss

        return objective

    def _validation_score(self, outputs, targets, sample_weight, valid_loss):
        # valid_loss is the mean held-out energy; the chains' mean energy
        # under the current weights anchors it (energies shift freely).
        if self._chains is None:
            return -valid_loss
        module = self.module_
        parameter = next(module.parameters())
        with torch.inference_mode():
            chains = torch.as_tensor(self._chains, dtype=parameter.dtype,
                                     device=parameter.device)
            e_chains = float(self._forward(module, chains)[:, 0].double().mean())
        return -(valid_loss - e_chains)


    # -- sampling ----------------------------------------------------------------

    def _sample(self, n_samples, generator):
        module = self.module_
        parameter = next(module.parameters())
        steps = (10 * int(self.n_mcmc_steps) if self.n_sample_steps is None
                 else int(self.n_sample_steps))
        # Langevin and HMC need input gradients: leave the inference mode
        # sample() runs in (the parameters still get no gradient).
        with torch.inference_mode(False):
            like = torch.empty(0, dtype=parameter.dtype, device=network_device(module))
            start = self._noise(n_samples, generator, like)
            samples, _ = self._run_chains(module, start, generator, steps)
            return samples.detach().clone()
