"""The estimator layer: scikit-learn's contract on top of the training core.

:class:`BaseNeuralEstimator` validates parameters and data once, seeds a
local generator, asks the family for its module (``_build_module``, which returns a
:class:`~sklears_neural.core.layers.ModuleSpec`), and
hands everything to the :class:`~sklears_neural.core.trainer.Trainer`. The
task mixins of :mod:`sklears_neural.core.tasks` own targets: label encoding,
the loss, and how raw outputs become predictions.

A family only writes ``_build_module(n_features_in, n_outputs)`` and declares
its architecture parameters.
"""

import contextlib
import copy
import inspect
import math
import signal
import threading
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sklears_neural.core._compat import (
    INF,
    CallbackList,
    Interval,
    ResolvableName,
    StrOptions,
    _check_optimize_result,
    _fit_context,
)
from sklears_neural.core.callbacks import (
    EarlyStopping,
    EpochLogger,
    InverseScalingLR,
    ProgressBar,
)
from sklears_neural.core import inference, modes
from sklears_neural.core.augment import AugmentOption, make_augmenter
from sklears_neural.core.data import call_module, takes_sparse
from sklears_neural.core.inputs import TABULAR
from sklears_neural.core.history import History
from sklears_neural.core.noise import NoiseScheduler, noise_layers, set_generator
from sklears_neural.core.optim import SOLVERS, apply_hyperparameters, make_optimizer
from sklears_neural.core.schedules import LEARNING_RATES, make_schedule
from sklears_neural.core.persistence import PicklableStateMixin, SaveLoadMixin
from sklears_neural.core.distributed import DataParallel
from sklears_neural.core.regularization import penalized_parameters, weight_penalty
from sklears_neural.core.precision import PRECISIONS, precision_policy
from sklears_neural.core.resolve import resolve_device
from sklears_neural.core.seeding import draw_seed, torch_generator
from sklears_neural.core.trainer import Trainer
from sklears_neural.exceptions import NetworkTooLargeError

__all__ = ["BaseNeuralEstimator"]


class BaseNeuralEstimator(SaveLoadMixin, PicklableStateMixin, BaseEstimator):
    """Base class of every neural estimator; do not instantiate it directly.

    Subclasses declare their architecture parameters in
    ``_parameter_constraints`` and implement ``_build_module``; a task mixin
    supplies ``_prepare_targets``, ``_loss`` and ``_outputs_to_predictions``.
    """

    _parameter_constraints: dict = {
        "solver": [ResolvableName(SOLVERS)],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [ResolvableName(LEARNING_RATES)],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), INF],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "warmup_iters": [Interval(Integral, 0, None, closed="left")],
        "clip_grad_norm": [None, Interval(Real, 0, None, closed="neither")],
        "clip_grad_value": [None, Interval(Real, 0, None, closed="neither")],
        "device": [str, torch.device],
        "strategy": [None, StrOptions({"ddp"})],
        "precision": [ResolvableName(PRECISIONS)],
        "inference_backend": [StrOptions(set(inference.BACKENDS))],
        "callbacks": [None, CallbackList()],
        "augment": [AugmentOption()],
    }

    # -- hooks for families and task mixins ----------------------------------

    def _build_module(self, n_features_in, n_outputs):
        """The family's network, as a :class:`~sklears_neural.core.layers.ModuleSpec`.

        A spec (class + JSON-able keyword arguments) rather than a built
        module, so the fitted architecture is plain data: pickling and
        loading rebuild it and pour the weights in. The core builds it,
        initializes it from the estimator's generator and moves it to the
        device and precision.

        Parameters
        ----------
        n_features_in : int
            Input width seen in ``fit``.
        n_outputs : int
            Output width the task needs (classes, labels or targets).

        Returns
        -------
        ModuleSpec
        """
        raise NotImplementedError

    def _input_kind(self):
        """What X the family takes (:mod:`sklears_neural.core.inputs`).

        Validation in fit and predict, the datasets that batch X, and the
        input tags all come from it. Default: 2-D rows, dense or sparse.
        """
        return TABULAR

    def _make_dataset(self, X, targets=None, sample_weight=None, *, dtype, device):
        """The dataset that batches validated ``X`` (and targets) for training.

        See :class:`~sklears_neural.core.data.ArrayData` for the protocol:
        ``n_samples``, ``batch(index) -> (inputs, y, w)``, ``all()``,
        ``chunks()``.
        """
        target_dtype = None if targets is None else self._target_dtype(dtype)
        return self._input_kind().dataset(
            X, targets, sample_weight, dtype=dtype, device=device,
            target_dtype=target_dtype,
        )

    def _forward(self, module, inputs):
        """How a batch's inputs reach the module: ``module(inputs)``.

        A tuple of inputs (padded sequences and their lengths) is spread:
        ``module(*inputs)``. A family whose module takes its batch another
        way overrides this; training, validation and prediction all call it.
        """
        return call_module(module, inputs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        return self._input_kind().tags(tags)

    # -- fit machinery ---------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit the model to ``X`` and targets ``y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data; families of other inputs (images, sequences)
            say what they take in their ``X`` description.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification) or real targets (regression);
            ignored by estimators fitted on ``X`` alone.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights: each sample's loss is weighted and the mean
            is taken over the total weight, as in scikit-learn.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _is_stochastic(self):
        return SOLVERS.canonical(self.solver) != "lbfgs"

    def _check_solver(self):
        if not self._is_stochastic():
            raise AttributeError(
                "partial_fit is only available for stochastic optimizers. "
                f"{self.solver!r} is not stochastic; use one of "
                f"{[name for name in SOLVERS.names if name != 'lbfgs']}."
            )
        return True

    def _fit(self, X, y, sample_weight=None, *, incremental=False, classes=None):
        first_pass = not hasattr(self, "module_") or (
            not self.warm_start and not incremental
        )
        if not first_pass and not self._same_architecture(incremental):
            first_pass = True
        # Any error, and a Ctrl-C that the training loop does not absorb (one
        # before the first step or after the last), leaves the estimator
        # exactly as it was before this call: never half-fitted, a fitted
        # model keeps its weights, a new one stays unfitted.
        saved = self._save_for_rollback(first_pass)
        try:
            return self._fit_unsafe(X, y, sample_weight, incremental, first_pass, classes)
        except BaseException:
            with _interrupts_deferred():
                self._rollback(saved)
            raise
        finally:
            # Fused optimizers and the fused step change the weights in place
            # without bumping torch's version counters, which is what the
            # prediction cache watches: training drops it explicitly.
            inference.clear_cache(self)

    def _same_architecture(self, incremental):
        """Whether the fitted module is what the parameters now describe.

        A warm start or ``partial_fit`` continues the fitted module, so it
        must be the network ``get_params()`` describes. After a change of
        architecture ``fit`` with ``warm_start=True`` builds the new network
        (with a warning: the weights are not kept), and ``partial_fit``,
        which cannot start over silently, raises.
        """
        old = self._module_spec_
        new = self._build_module(self.n_features_in_, self.n_outputs_)
        if new == old:
            return True
        if new.module_class is not old.module_class:
            changes = f"{old.module_class.__name__} -> {new.module_class.__name__}"
        else:
            changes = ", ".join(
                f"{key}: {old.kwargs.get(key)!r} -> {new.kwargs.get(key)!r}"
                for key in sorted({*old.kwargs, *new.kwargs})
                if old.kwargs.get(key) != new.kwargs.get(key)
            )
        if incremental:
            raise ValueError(
                "partial_fit cannot continue: the architecture parameters changed "
                f"since the model was fitted ({changes}). Set them back, or call "
                "fit to train the new network from scratch."
            )
        warnings.warn(
            "warm_start=True, but the architecture parameters changed since the "
            f"last fit ({changes}): a new network was built, and the fitted "
            "weights were not kept.",
            UserWarning,
        )
        return False

    #: The fitted networks, declared once: pickling, ``save``/``load``, the
    #: rollback of a failed fit and checkpoints (exact resume) keep each one,
    #: with its optimizer's state. ``{attribute: entry}``; an entry names the
    #: attribute holding the network's ModuleSpec (``"spec"``, required), the
    #: one holding the optimizer that steps it (``"optimizer"``, None for a
    #: target copy or a teacher), the one holding the ``solver`` option that
    #: optimizer was built with (``"solver"``, None: the ``solver``
    #: parameter), and whether ``_forward`` runs it on X (``"takes_input"``:
    #: load checks its widths). A family with more networks adds entries:
    #: ``{**BaseNeuralEstimator._networks, "target_": {"spec": "_module_spec_"}}``.
    #: See :func:`sklears_neural.core.persistence.declared_networks`.
    _networks = {
        "module_": {
            "spec": "_module_spec_",
            "optimizer": "_optimizer",
            "solver": "_optimizer_solver",
            "takes_input": True,
        },
    }

    def _save_for_rollback(self, first_pass):
        """What :meth:`_rollback` needs to put the estimator back as it is now.

        The attributes, plus what training changes in place: the generator,
        stopping, schedule and callback state, and (unless this fit builds
        new networks) the weights of every network in ``_networks`` and the
        state of every optimizer it declares.
        """
        from sklears_neural.core.persistence import declared_networks

        attributes = dict(self.__dict__)
        # What training changes in place, beyond the attributes it reassigns.
        in_place = {
            "_generator": (
                None if attributes.get("_generator") is None
                else attributes["_generator"].get_state()
            ),
            "_stopping": copy.deepcopy(attributes.get("_stopping")),
            "_schedule": copy.deepcopy(attributes.get("_schedule")),
            "callbacks_": copy.deepcopy(attributes.get("callbacks_")),
        }
        weights, optimizer_states = {}, {}
        if first_pass:
            # A first pass trains networks and optimizers it builds anew; the
            # fitted ones stay untouched in ``attributes``.
            return attributes, in_place, weights, optimizer_states
        for name, entry in declared_networks(self).items():
            network = attributes.get(name)
            if isinstance(network, torch.nn.Module):
                weights[name] = {
                    k: v.detach().clone() for k, v in network.state_dict().items()
                }
            optimizer = attributes.get(entry["optimizer"]) if entry["optimizer"] else None
            if optimizer is not None:
                optimizer_states[entry["optimizer"]] = copy.deepcopy(
                    optimizer.state_dict()
                )
        return attributes, in_place, weights, optimizer_states

    def _rollback(self, saved):
        """Put back what :meth:`_save_for_rollback` saved, in place."""
        attributes, in_place, weights, optimizer_states = saved
        self.__dict__.clear()
        self.__dict__.update(attributes)
        if in_place["_generator"] is not None:
            self._generator.set_state(in_place["_generator"])
        for name in ("_stopping", "_schedule", "callbacks_"):
            if name in attributes:
                setattr(self, name, in_place[name])
        for name, state in weights.items():
            getattr(self, name).load_state_dict(state)
        for name, state in optimizer_states.items():
            getattr(self, name).load_state_dict(state)

    def _fit_unsafe(self, X, y, sample_weight, incremental, first_pass, classes):
        X, targets, sample_weight = self._validate_training_data(
            X, y, sample_weight, reset=first_pass, incremental=incremental, classes=classes
        )
        if sample_weight is not None and bool(np.all(sample_weight == 1.0)):
            # Unit weights are no weights: the same model as without them,
            # to the bit, not to the rounding of a weighted mean.
            sample_weight = None
        device = resolve_device(self.device)
        if self._data_parallel():
            device = DataParallel.start(device).device
        policy = precision_policy(self.precision, device)
        dtype = policy.param_dtype
        inference.check_representable(X, dtype)
        if first_pass:
            self._initialize(self.n_features_in_, targets, device, dtype)
        else:
            self.module_.to(device=device, dtype=dtype)
            if self._optimizer is not None:
                # Moves the kept optimizer state along with the parameters.
                self._optimizer.load_state_dict(self._optimizer.state_dict())

        # Prediction from other threads meanwhile must not flip the flags
        # the fit switches; the module rests in evaluation mode after it.
        with modes.training(self.module_):
            if self._is_stochastic():
                self._fit_stochastic(X, targets, sample_weight, incremental, device,
                                     policy)
            else:
                self._fit_lbfgs(X, targets, sample_weight, device, dtype)
        return self

    def _data_parallel(self):
        """Whether this fit trains data-parallel (``strategy="ddp"``).

        Raises
        ------
        ValueError
            Where the fit cannot be split over ranks: L-BFGS, and families
            that step a second network's optimizer inside their own step.
        """
        if getattr(self, "strategy", None) != "ddp":
            return False
        if not self._is_stochastic():
            raise ValueError(
                "strategy='ddp' splits each mini-batch over the processes; "
                "solver='lbfgs' takes whole-data steps. Use solver='adam' or "
                "'sgd', or strategy=None."
            )
        from sklears_neural.core.persistence import declared_networks

        others = [name for name, entry in declared_networks(self).items()
                  if name != "module_" and entry.get("optimizer")]
        if others:
            raise ValueError(
                f"strategy='ddp' sums the gradients of module_'s optimizer across "
                f"the processes, but {type(self).__name__} also steps "
                f"{', '.join(others)} with an optimizer of its own inside its "
                "training step. Train it with strategy=None."
            )
        return True

    def _initialize(self, n_features, targets, device, dtype):
        self._generator = torch_generator(self.random_state)
        self.n_outputs_ = self._n_outputs_for(targets)
        self.out_activation_ = self._output_activation()
        spec = self._build_module(n_features, self.n_outputs_)
        try:
            module = spec.build(generator=self._generator)
            if _takes_generator(getattr(module, "reset_parameters", None)):
                module.reset_parameters(generator=self._generator)
            # Dropout and noise masks come from the fit's generator too, so a
            # seed fixes them and the global RNG is never touched.
            set_generator(module, self._generator)
            self.module_ = module.to(device=device, dtype=dtype)
        except (MemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            raise _too_large(spec, dtype, device) from exc
        self._module_spec_ = spec
        self._reset_training_state()

    def _reset_training_state(self):
        """Training state a new module starts with: nothing learned yet.

        Also used when a module arrives from elsewhere (``from_sklearn``),
        so every later ``fit`` / ``partial_fit`` finds the same attributes.
        """
        self._optimizer = None
        self._optimizer_solver = None
        self._stopping = None
        self._schedule = None
        self._resume = None
        self._scaler = None
        self.history_ = History()
        self.t_ = 0

    def _objective(self, module=None):
        """``objective(module, X, y, w)``: weighted mean loss + weight penalty.

        As scikit-learn, the penalty (see ``core.regularization``) is divided
        by the batch's total sample weight.

        Parameters
        ----------
        module : torch.nn.Module, default=None
            The module whose weights are penalized; ``module_`` if None.
        """
        loss_fn, mean_loss_fn = self._loss, self._mean_loss
        forward = self._forward
        alpha = float(self.alpha)
        l1_ratio = float(self.l1_ratio)
        penalized = penalized_parameters(self.module_ if module is None else module)

        def objective(module, X, y, w):
            output = forward(module, X)
            if output.dtype in (torch.float16, torch.bfloat16):
                # Mixed precision: the loss itself is computed in float32.
                output = output.float()
            if w is None:
                loss = mean_loss_fn(output, y)
                denominator = output.shape[0]
            else:
                denominator = w.sum()
                loss = (loss_fn(output, y) * w).sum() / denominator
            if alpha and penalized:
                loss = loss + weight_penalty(penalized, alpha, l1_ratio) / denominator
            return loss

        return objective

    def _train_step(self, policy):
        """A family's fast training step, or None: autograd on ``_objective``.

        ``train_step(X, y, sample_weight) -> loss`` fills the parameters'
        ``.grad`` itself (see :class:`~sklears_neural.core.trainer.Trainer`);
        the MLP family returns its written-out backward pass here.

        Parameters
        ----------
        policy : PrecisionPolicy
            The fit's precision (a fast step may not cover autocast).
        """
        return None

    def _batch_augmenter(self):
        """What the trainer applies to each training batch's inputs, or None.

        Default: the :class:`~sklears_neural.core.augment.Augmenter` of
        ``augment`` for the input kind's layout. A family that augments
        inside its own objective (the self-supervised encoders draw two views
        of each sample from the same augmenter) returns None here, so the
        trainer hands it the batch as it is.
        """
        return make_augmenter(self.augment, layout=self._input_kind().layout)

    def _prediction_plan(self, module):
        """A family's float64 NumPy translation of its module, or None.

        Prediction runs it instead of the module for small CPU batches of
        2-D rows (:mod:`sklears_neural.core.inference`): a row's outputs
        then depend on the rest of its batch only within float64 rounding,
        at a few NumPy calls per batch. The MLP family returns
        :func:`~sklears_neural.core.plan.compile_plan` of its module here;
        asked once per module state. With None (the default), batches of at
        most ``plan.PLAN_MIN_ROWS`` rows run a float64 copy of the module
        and larger ones the module itself, in chunks.

        Parameters
        ----------
        module : torch.nn.Module
            The fitted module (``module_``), at its current weights.

        Returns
        -------
        plan : Plan or None
            Called on a dense batch ``(n_samples, n_features)``, with
            ``plan.sparse`` for a sparse one, each returning float64 outputs
            ``(n_samples, n_outputs)``; ``plan.macs`` (multiply-adds per row)
            prices larger batches (:func:`~sklears_neural.core.plan.use_plan`).
        """
        return None

    def _fused_loss_kind(self):
        """The ``core.fused.LOSS_KINDS`` entry equal to ``_loss``, or None.

        A task mixin that names one promises that its ``_loss`` is that
        loss; a subclass that changes ``_loss`` must return None here.
        """
        return None

    def _mean_loss(self, output, target):
        """``self._loss(output, target).mean()``; task mixins fuse it into one op.

        Unweighted batches (the usual case) take this path: torch's reducing
        losses are one autograd node instead of three.
        """
        return self._loss(output, target).mean()

    #: Rows per batch for ``batch_size="auto"``: scikit-learn's 200, at most
    #: the data. A family whose objective wants smaller steps (VAE, energy
    #: models: 64) or whole-data steps (transductive GNNs: None) sets it.
    _auto_batch_size = 200

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            auto = self._auto_batch_size
            return n_samples if auto is None else min(auto, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is "
                "going to be clipped"
            )
        return int(np.clip(self.batch_size, 1, n_samples))

    def _split_validation(self, X, targets, sample_weight, seed):
        if self.validation_fraction == 0:
            raise ValueError(
                "early_stopping=True needs a validation set, but "
                "validation_fraction=0 sets no samples aside. Set "
                "validation_fraction in (0, 1) (e.g. 0.1), or early_stopping=False."
            )
        stratify = self._stratify_labels(targets)
        arrays = [X, targets] + ([sample_weight] if sample_weight is not None else [])
        parts = train_test_split(
            *arrays,
            random_state=seed,
            test_size=self.validation_fraction,
            stratify=stratify,
        )
        train, valid = parts[0::2], parts[1::2]
        if valid[0].shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' "
                "or the size of your dataset."
            )
        if sample_weight is None:
            train, valid = train + [None], valid + [None]
        return train, valid

    def _evaluator(self, X_val, y_val, w_val, device, dtype):
        data = self._make_dataset(X_val, y_val, w_val, dtype=dtype, device=device)
        loss_fn, forward = self._loss, self._forward

        def evaluate():
            module = self.module_
            with torch.inference_mode():
                if data.sparse and takes_sparse(module):
                    X, y, _ = data.all(keep_sparse=True)
                    outputs = [forward(module, X)]
                    losses = [loss_fn(outputs[0], y)]
                else:
                    # Bounded chunks: wide sparse input is never made dense
                    # whole, nor are long sequences padded all at once.
                    outputs, losses = [], []
                    for rows in data.chunks():
                        X, y, _ = data.batch(rows)
                        outputs.append(forward(module, X))
                        losses.append(loss_fn(outputs[-1], y))
                per_sample = torch.cat(losses)
                if data.w is None:
                    valid_loss = per_sample.mean()
                else:
                    valid_loss = (per_sample * data.w).sum() / data.w.sum()
            valid_loss = valid_loss.item()
            score = self._validation_score(
                [out.double().cpu().numpy() for out in outputs], y_val, w_val, valid_loss
            )
            return {"valid_loss": valid_loss, "valid_score": float(score)}

        return evaluate

    def _validation_score(self, outputs, targets, sample_weight, valid_loss):
        """The score early stopping watches: the task's ``score`` on held-out rows.

        Parameters
        ----------
        outputs : list of ndarray
            Raw outputs (float64) of consecutive row chunks.
        targets : ndarray or None
            Encoded targets of the validation rows.
        sample_weight : ndarray or None
        valid_loss : float
            Their mean loss: the score of a task without predictions
            (density models) is minus it.
        """
        if targets is None:
            return -valid_loss
        outputs = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        predictions = self._outputs_to_predictions(outputs)
        return self._score_predictions(targets, predictions, sample_weight)

    #: Whether the training loss measures progress, so that the ``tol`` rule
    #: may end a fit on it. Not for adversarial and contrastive-divergence
    #: losses (GAN, energy models): without ``early_stopping`` they train all
    #: ``max_iter`` epochs.
    _loss_tracks_progress = True

    def _make_stopping(self, incremental):
        watches_loss = not self.early_stopping
        return EarlyStopping(
            monitor="train_loss" if watches_loss else "valid_score",
            patience=(math.inf if watches_loss and not self._loss_tracks_progress
                      else self.n_iter_no_change),
            tol=self.tol,
            restore_best_weights=self.early_stopping,
            # In partial_fit the caller drives the loop: the best weights come
            # back only when patience runs out, not after every call.
            restore_on="stop" if incremental else "end",
            lr_reduce_factor=(
                5.0
                if SOLVERS.canonical(self.solver) == "sgd"
                and LEARNING_RATES.canonical(self.learning_rate) == "adaptive"
                else None
            ),
            verbose=bool(self.verbose),
        )

    def _fit_stochastic(self, X, targets, sample_weight, incremental, device, policy):
        dtype = policy.param_dtype
        # A warm-started fit of a model loaded from a Checkpoint of an
        # unfinished fit resumes that fit: same validation split, stopping
        # and schedule state, and only the epochs that were left.
        resume = None if incremental or not self.warm_start else self._resume
        distributed = DataParallel(device) if self._data_parallel() else None
        if distributed is not None:
            # Every rank starts from rank 0's weights and generator: the same
            # validation split, permutations and initialization without a seed.
            distributed.broadcast_state(self.module_, self._generator)
        split_seed = None
        if self.early_stopping:
            split_seed = resume["split_seed"] if resume else draw_seed(self._generator)
            (X, targets, sample_weight), (X_v, y_v, w_v) = self._split_validation(
                X, targets, sample_weight, split_seed
            )
            evaluate = self._evaluator(X_v, y_v, w_v, device, dtype)
        else:
            evaluate = None
        data = self._make_dataset(X, targets, sample_weight, dtype=dtype, device=device)

        solver = SOLVERS.canonical(self.solver)
        kept = self._optimizer is not None and self._optimizer_solver == solver
        if not kept:
            self._optimizer = make_optimizer(self.module_, self)
            self._optimizer_solver = solver
        elif not incremental and not resume:
            apply_hyperparameters(self._optimizer, self)
        batch_size = self._batch_size(data.n_samples)
        schedule = self._learning_rate_schedule(
            (incremental or resume is not None) and kept,
            math.ceil(data.n_samples / batch_size),
        )

        if self._stopping is not None and (
            resume is not None or (incremental and self._stopping.restore_on == "stop")
        ):
            # A partial_fit loop continues its own stopping state; one left by
            # fit (which restores at every end) is not reused.
            stopping = self._stopping
        else:
            stopping = self._make_stopping(incremental)
        callbacks = [stopping] + ([schedule] if schedule is not None else [])
        if noise_layers(self.module_):
            callbacks.append(NoiseScheduler(max_epochs=self.max_iter))
        if solver == "sgd" and LEARNING_RATES.canonical(self.learning_rate) == "invscaling":
            callbacks.append(InverseScalingLR(self.learning_rate_init, self.power_t))
        if distributed is None or distributed.rank == 0:
            callbacks.extend(self._verbose_callbacks())
        callbacks.extend(self._user_callbacks(incremental))

        trainer = Trainer(
            self.module_,
            self._objective(),
            self._optimizer,
            callbacks=callbacks,
            generator=self._generator,
            history=History(self.history_),
            samples_seen=self.t_,
            clip_grad_norm=self.clip_grad_norm,
            clip_grad_value=self.clip_grad_value,
            autocast_dtype=policy.autocast_dtype,
            grad_scaler=self._grad_scaler(policy, device, incremental),
            train_step=self._train_step(policy),
            augment=self._batch_augmenter(),
            # As scikit-learn: with a validation set to pick the best epoch,
            # a diverging one ends training instead of failing the fit.
            stop_on_divergence=bool(self.early_stopping),
            distributed=distributed,
        )
        epochs_before = resume["epoch"] if resume else 0
        start = len(self.history_)

        def epochs_done():
            return epochs_before + len(trainer.history) - start

        def checkpoint(path):
            if distributed is not None and distributed.rank != 0:
                return  # Rank 0 writes; every rank holds the same state.
            self._stopping = stopping
            self._record(History(trainer.history), trainer.samples_seen, epochs_done())
            self.converged_ = stopping.stopped
            self._resume = (
                None if incremental
                else {"epoch": epochs_done(), "split_seed": split_seed}
            )
            with warnings.catch_warnings():
                # The callbacks (the Checkpoint among them) are not data.
                warnings.filterwarnings("ignore", message=".*callbacks.*")
                self.save(path)

        trainer.checkpoint = checkpoint
        self._check_batch_norm_batches(data.n_samples, batch_size)
        trainer.fit(
            data,
            max_epochs=1 if incremental else self.max_iter - epochs_before,
            batch_size=batch_size,
            shuffle=self.shuffle,
            evaluate=evaluate,
        )
        epochs_run = epochs_done()
        self._stopping = stopping
        self._resume = None
        self._record(trainer.history, trainer.samples_seen, epochs_run)
        self.converged_ = stopping.stopped
        if not incremental and epochs_run == self.max_iter and not stopping.stopped:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
            )

    def _learning_rate_schedule(self, continuing, steps_per_epoch):
        """The ``learning_rate`` schedule callback (``None`` when constant).

        scikit-learn's "invscaling" and "adaptive" apply to ``solver="sgd"``
        only (handled by InverseScalingLR and EarlyStopping); the other
        schedules apply to every stochastic solver. A ``partial_fit`` loop
        continues its schedule; every ``fit`` starts a new one.
        """
        if continuing and getattr(self, "_schedule", None) is not None:
            return self._schedule
        option = self.learning_rate
        if SOLVERS.canonical(self.solver) != "sgd" and LEARNING_RATES.canonical(
            option
        ) in ("invscaling", "adaptive"):
            option = "constant"
        self._schedule = make_schedule(
            option,
            self._optimizer,
            learning_rate_init=self.learning_rate_init,
            max_iter=self.max_iter,
            steps_per_epoch=steps_per_epoch,
            warmup_iters=self.warmup_iters,
        )
        return self._schedule

    def _grad_scaler(self, policy, device, incremental):
        # The loss scale is optimizer-like state: partial_fit continues it.
        scaler = getattr(self, "_scaler", None) if incremental else None
        if scaler is None:
            scaler = policy.grad_scaler(device)
        self._scaler = scaler
        return scaler

    def _check_batch_norm_batches(self, n_samples, batch_size):
        has_batch_norm = any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for m in self.module_.modules()
        )
        if has_batch_norm and (batch_size == 1 or n_samples % batch_size == 1):
            raise ValueError(
                f"Batch normalization cannot train on a batch of 1 sample, and "
                f"batch_size={batch_size} over {n_samples} training samples leaves "
                "one. Choose another batch_size, or a network without batch "
                "normalization (e.g. layer_norm=True for the MLPs)."
            )

    def _verbose_callbacks(self):
        # scikit-learn's "Iteration N, loss = ..." lines on stdout for any
        # verbose level, as scikit-learn prints them; from 2 on, a progress
        # bar on stderr as well.
        if not self.verbose:
            return []
        return [EpochLogger()] + ([ProgressBar()] if self.verbose >= 2 else [])

    def _user_callbacks(self, incremental):
        """Copies of ``callbacks`` for this fit, kept as ``callbacks_``.

        ``fit`` never mutates its parameters: every fit trains with fresh
        copies (an EarlyStopping starts over), which stay readable as the
        fitted ``callbacks_``; ``partial_fit`` calls continue the same copies.
        """
        if not (incremental and getattr(self, "callbacks_", None) is not None):
            self.callbacks_ = [copy.deepcopy(cb) for cb in self.callbacks or []]
        return self.callbacks_

    def _fit_lbfgs(self, X, targets, sample_weight, device, dtype):
        if self.augment is not None:
            raise ValueError(
                "solver='lbfgs' needs a deterministic objective, but augment="
                f"{self.augment!r} transforms every batch at random. Use "
                "solver='adam' or 'sgd', or augment=None."
            )
        data = self._make_dataset(X, targets, sample_weight, dtype=dtype, device=device)
        self._optimizer = None
        self._optimizer_solver = self.solver
        callbacks = self._verbose_callbacks()
        trainer = Trainer(
            self.module_,
            self._objective(),
            None,
            callbacks=callbacks + self._user_callbacks(incremental=False),
            history=History(self.history_),
        )
        result = trainer.fit_lbfgs(
            data, max_iter=self.max_iter, max_fun=self.max_fun, tol=self.tol
        )
        n_iter = _check_optimize_result("lbfgs", result, self.max_iter)
        self._resume = None
        self._record(trainer.history, self.t_, n_iter)
        self.loss_ = float(result.fun)
        self.converged_ = bool(result.success)

    def _record(self, history, samples_seen, epochs_run):
        """Set the scikit-learn fitted attributes from the training history."""
        self.history_ = history
        self.n_iter_ = int(epochs_run)
        self.t_ = int(samples_seen)
        self.loss_curve_ = history.column("train_loss")
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else None
        if self.early_stopping and self._is_stochastic():
            self.validation_scores_ = history.column("valid_score")
            self.validation_loss_curve_ = history.column("valid_loss")
            self.best_validation_score_ = max(self.validation_scores_, default=None)
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_, default=None)

    # -- prediction --------------------------------------------------------------

    def _raw_outputs(self, X, forward=None, module=None):
        """Validated ``X`` through the module: raw outputs as float64 numpy.

        See :mod:`sklears_neural.core.inference`: a plain float ndarray is
        checked without ``validate_data``; on the CPU, small batches run a
        float64 NumPy translation of the module (a row's outputs then depend
        on the rest of its batch only within float64 rounding, ~1e-16, as
        scikit-learn's invariance checks need), large ones the module itself
        in its own dtype; ``inference_backend="onnxruntime"`` runs the graph
        of :meth:`to_onnx` in ONNX Runtime.
        """
        return inference.raw_outputs(self, X, forward, module)

    def to_onnx(self, path=None):
        """Export the fitted estimator to ONNX: the network and its predictions.

        The graph takes ``X``, float32 of shape (n_samples, n_features_in_),
        with a dynamic batch axis, and outputs what ``predict`` and
        ``predict_proba`` return: ``label`` (the values of ``classes_``,
        strings included; 0/1 indicators for multilabel targets) and
        ``probabilities`` for a classifier, ``prediction`` for a regressor,
        plus ``raw_output``, the network's own output. Exported with
        ``torch.onnx.export(dynamo=True)``, opset 18; see
        :mod:`sklears_neural.core.export`. Needs
        ``pip install sklears-neural[onnx]``.

        Parameters
        ----------
        path : str or os.PathLike, default=None
            Also write the model to this file.

        Returns
        -------
        model : bytes
            A serialized ``onnx.ModelProto``; ``onnx.load_from_string`` or
            ``onnxruntime.InferenceSession`` read it.

        Raises
        ------
        ImportError
            If onnx or onnxscript is missing.
        ValueError
            If the module has a layer ``torch.onnx`` cannot export (the
            message names it), or the class labels are of a type ONNX cannot
            hold.

        See Also
        --------
        sklears_neural.core.export : The graph, output by output.
        """
        return inference.onnx_model(self, path)


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold a Ctrl-C until the block ends, so the block runs whole.

    Only the main thread receives SIGINT; elsewhere, or when someone has
    installed their own handler, this does nothing.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if received:
            raise KeyboardInterrupt


def _takes_generator(reset_parameters):
    """Whether a module's ``reset_parameters`` accepts ``generator=``.

    torch's layers and most users' modules define ``reset_parameters(self)``:
    they keep the initialization their build drew, which ran on a stream
    seeded from ``random_state`` (``ModuleSpec.build``).
    """
    if reset_parameters is None:
        return False
    try:
        parameters = inspect.signature(reset_parameters).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _is_out_of_memory(exc):
    # torch reports a refused allocation as a RuntimeError (CPU) or its
    # subclass OutOfMemoryError (CUDA).
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        "allocate" in str(exc)
    )


def _too_large(spec, dtype, device):
    """The error for a network too large to build: its size, and what to change."""
    with torch.device("meta"):
        n_parameters = sum(p.numel() for p in spec.build().parameters())
    size = n_parameters * torch.empty((), dtype=dtype).element_size()
    settings = ", ".join(f"{key}={value!r}" for key, value in spec.kwargs.items())
    return NetworkTooLargeError(
        f"The network has {n_parameters:,} parameters ({size / 2**30:,.1f} GiB "
        f"in {str(dtype).replace('torch.', '')}), more than {device} could "
        f"allocate. Its settings: {settings}. Choose smaller layer sizes."
    )
