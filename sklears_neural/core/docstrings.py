"""Parameter docs written once: the training parameters every family shares.

scikit-learn needs every parameter in each estimator's ``__init__``, and
numpydoc wants each in the class docstring. Restating ~30 training
parameters in every family drifts (the two MLP docstrings once disagreed on
which solvers exist), so a class docstring lists only what is its own and
ends its Parameters section with a marker line::

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ...
    <shared parameters>

:func:`document_parameters` (a class decorator) then writes the section out
in the order of the ``__init__`` signature: the class's own entries, then a
family's (``extra``, e.g. the MLP architecture), then :data:`PARAMETERS`. A
signature parameter documented nowhere is an error at import, so no
estimator ships an undocumented parameter. ``help(est)``, IDEs and Sphinx
show the full text; a reader of the source finds each entry here.

The fitted attributes every estimator on the core sets work the same way:
a ``<shared attributes>`` line in the Attributes section becomes the
entries of :data:`ATTRIBUTES` the class does not document itself.
"""

import inspect
import re

__all__ = ["ATTRIBUTES", "ATTRIBUTES_MARKER", "MARKER", "PARAMETERS", "document_parameters"]

#: The line (after its indentation) that :func:`document_parameters` replaces.
MARKER = "<shared parameters>"

#: numpydoc entries of the training parameters of ``BaseNeuralEstimator``.
PARAMETERS = {
    "solver": """\
solver : str or (str, dict), default="adam"
    ``"lbfgs"``: full-batch quasi-Newton (good for small data);
    ``"sgd"``: SGD with momentum; ``"adam"``: Adam; also "adamw",
    "nadam", "radam", "rmsprop" (decay ``beta_2``), "adagrad", and the
    layer-wise "lars" and "lamb" for large batches (LARS wants
    ``learning_rate_init`` near 1). Settings override the estimator's:
    ``("lars", {"trust_coefficient": 0.01})``.""",
    "alpha": """\
alpha : float, default=0.0001
    L2 penalty on the weight matrices, divided by the batch's total
    sample weight when added to the loss (scikit-learn's scaling).""",
    "batch_size": """\
batch_size : int or "auto", default="auto"
    Mini-batch size for stochastic solvers; ``"auto"`` is
    ``min(200, n_samples)``.""",
    "learning_rate": """\
learning_rate : str or (str, dict), default="constant"
    Step-size schedule. scikit-learn's, for ``solver="sgd"`` only:
    "constant"; "invscaling", ``lr0 / (t+1)**power_t`` with ``t`` the
    samples seen; "adaptive", divide by 5 whenever ``n_iter_no_change``
    epochs pass without improving by ``tol``. For every stochastic
    solver: "step", "exponential", "cosine" (optionally with warm
    restarts), "cyclic", "one_cycle", with settings such as
    ``("step", {"step_size": 10, "gamma": 0.5})``; see ``warmup_iters``.""",
    "learning_rate_init": """\
learning_rate_init : float, default=0.001
    Initial step size (stochastic solvers).""",
    "power_t": """\
power_t : float, default=0.5
    Exponent of ``"invscaling"``.""",
    "max_iter": """\
max_iter : int, default=200
    Epochs for stochastic solvers, iterations for L-BFGS.""",
    "shuffle": """\
shuffle : bool, default=True
    Shuffle samples every epoch (stochastic solvers).""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Seeds a local torch generator for initial weights, the validation
    split and shuffling. The global RNGs are never reseeded.""",
    "tol": """\
tol : float, default=1e-4
    Improvement below ``tol`` for more than ``n_iter_no_change`` epochs
    in a row ends training (or, with ``"adaptive"``, lowers the rate).""",
    "verbose": """\
verbose : bool or int, default=False
    ``True``/1: print scikit-learn's line per epoch; 2 or more: a tqdm
    progress bar (on stderr) instead.""",
    "warm_start": """\
warm_start : bool, default=False
    Continue from the previous fit's weights **and optimizer state**.""",
    "momentum": """\
momentum : float, default=0.9
    Momentum of ``solver="sgd"``.""",
    "nesterovs_momentum": """\
nesterovs_momentum : bool, default=True
    Use Nesterov momentum with ``solver="sgd"``.""",
    "early_stopping": """\
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the data, stop when its score
    (accuracy, R²) stops improving, and keep the best weights. Also works with
    :meth:`partial_fit` (see there).""",
    "validation_fraction": """\
validation_fraction : float, default=0.1
    Held-out share for ``early_stopping``.""",
    "beta_1": """\
beta_1 : float, default=0.9
    Adam's first-moment decay.""",
    "beta_2": """\
beta_2 : float, default=0.999
    Adam's second-moment decay.""",
    "epsilon": """\
epsilon : float, default=1e-8
    Adam's numerical-stability term.""",
    "n_iter_no_change": """\
n_iter_no_change : int, default=10
    Patience, in epochs, of the ``tol`` rule.""",
    "max_fun": """\
max_fun : int, default=15000
    Maximum loss evaluations of L-BFGS.""",
    "l1_ratio": """\
l1_ratio : float, default=0.0
    Share of L1 in the penalty (elastic net, as scikit-learn's
    ``SGDClassifier``): ``alpha * (l1_ratio * |W|_1 + (1 - l1_ratio) / 2
    * ||W||^2)``; 0 is scikit-learn's MLP penalty.""",
    "weight_decay": """\
weight_decay : float, default=0.0
    Decoupled weight decay of the "adamw", "nadam", "radam", "lars" and
    "lamb" solvers (``alpha`` stays the L2 term of the loss).""",
    "warmup_iters": """\
warmup_iters : int, default=0
    Optimizer steps over which the learning rate ramps up linearly from
    0 to its scheduled value.""",
    "clip_grad_norm": """\
clip_grad_norm : float or None, default=None
    Rescale gradients to this global L2 norm at most (stochastic solvers).""",
    "clip_grad_value": """\
clip_grad_value : float or None, default=None
    Clamp each gradient element to ``[-value, value]`` (stochastic solvers).""",
    "device": """\
device : {"cpu", "cuda", "auto"} or str, default="cpu"
    Where to train and predict; ``"auto"`` picks CUDA when present.""",
    "strategy": """\
strategy : {None, "ddp"}, default=None
    ``"ddp"``: data-parallel training over ``torch.distributed`` in the
    processes ``torchrun`` starts (gloo on CPU, nccl on CUDA): each process
    passes the same data and trains on its share of every batch, with the
    gradients summed across processes, so the fit equals one process's
    to rounding. Stochastic solvers only; see ``doc/scaling.md``.""",
    "precision": """\
precision : {"float32", "float64", "mixed"}, default="float32"
    Compute dtype; ``"mixed"`` trains float32 weights under bfloat16
    autocast on CPU, float16 with loss scaling on CUDA. Probabilities are
    returned as float64 either way.""",
    "inference_backend": """\
inference_backend : {"torch", "onnxruntime"}, default="torch"
    What runs :meth:`predict` and :meth:`predict_proba`. ``"torch"``:
    small CPU batches run a float64 NumPy translation of the network
    (fast for a few rows, and a row's result does not depend on its
    batch), large ones the network in its own dtype.
    ``"onnxruntime"``: the graph of :meth:`to_onnx` in an ONNX Runtime
    session, in float32; results agree with ``"torch"`` to about 1e-6.
    The graph is exported on the first prediction (seconds) and kept by
    pickling and :meth:`save`. Needs ``pip install sklears-neural[onnx]``.""",
    "callbacks": """\
callbacks : list of Callback or None, default=None
    Extra :class:`~sklears_neural.callbacks.Callback` objects for the
    training loop (stochastic solvers call every hook; L-BFGS calls the
    train and epoch hooks).""",
    "augment": """\
augment : str, (str, dict), list of them, or None, default=None
    Random transformations of each training batch, applied in order:
    "gaussian_noise", "uniform_noise", "feature_dropout", "scaling",
    "magnitude_scaling", "permutation"; images: "random_shift", "flip",
    "crop"; sequences: "jitter", "time_warp", "window_slice" (see
    :mod:`sklears_neural.core.augment` for settings). Drawn from the
    estimator's generator (``random_state`` fixes them, resume is exact);
    never applied to validation data or predictions. Stochastic solvers
    only.""",
}

#: The Attributes marker: replaced by the :data:`ATTRIBUTES` entries a class
#: does not document itself.
ATTRIBUTES_MARKER = "<shared attributes>"

#: numpydoc entries of the fitted attributes every estimator on the core
#: sets, in the order they are listed. A class documents its own version of
#: one where its meaning differs for its task (a classifier's held-out
#: accuracy), and that version wins.
ATTRIBUTES = {
    "loss_": """\
loss_ : float
    Loss at the end of training (penalty included).""",
    "best_loss_": """\
best_loss_ : float or None
    Lowest training loss; ``None`` with ``early_stopping``.""",
    "loss_curve_": """\
loss_curve_ : list of float
    Training loss per epoch (per iteration for L-BFGS).""",
    "validation_scores_": """\
validation_scores_ : list of float or None
    Held-out score per epoch with ``early_stopping``, else ``None``.""",
    "validation_loss_curve_": """\
validation_loss_curve_ : list of float or None
    Held-out loss per epoch with ``early_stopping``, else ``None``.""",
    "best_validation_score_": """\
best_validation_score_ : float or None
    Best of ``validation_scores_``.""",
    "t_": """\
t_ : int
    Training samples seen by the stochastic solver.""",
    "n_iter_": """\
n_iter_ : int
    Epochs (or L-BFGS iterations) run by the last call.""",
    "n_outputs_": """\
n_outputs_ : int
    Number of outputs.""",
    "converged_": """\
converged_ : bool
    Whether the ``tol`` rule (or L-BFGS) ended training before
    ``max_iter``.""",
    "history_": """\
history_ : History
    One dict per epoch: ``epoch``, ``train_loss`` and, with
    ``early_stopping``, ``valid_loss`` and ``valid_score``.""",
}

_ENTRY = re.compile(r"^(\w+) :", re.M)


def _entries(text):
    """``{name: entry}`` of numpydoc entries in ``text`` (no indentation)."""
    starts = [(m.start(), m.group(1)) for m in _ENTRY.finditer(text)]
    bounds = [start for start, _ in starts[1:]] + [len(text)]
    return {name: text[start:end].rstrip("\n") for (start, name), end in zip(starts, bounds)}


def _indent(text, prefix):
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def document_parameters(cls=None, *, extra=None):
    """Write out the Parameters section of ``cls``'s docstring at its marker.

    Parameters
    ----------
    cls : type
        An estimator whose docstring holds a ``<shared parameters>`` line.
    extra : dict of str to str, default=None
        A family's own shared entries, used before :data:`PARAMETERS`.

    Returns
    -------
    cls : type
        The same class, its docstring completed.

    Raises
    ------
    TypeError
        If an ``__init__`` parameter is documented nowhere, or the marker is
        missing.
    """
    if cls is None:
        return lambda cls: document_parameters(cls, extra=extra)
    doc = inspect.cleandoc(cls.__doc__)
    head, marker, tail = doc.partition(MARKER)
    if not marker:
        raise TypeError(f"{cls.__name__}'s docstring has no {MARKER!r} line.")
    title = "Parameters\n----------\n"
    intro, _, own = head.partition(title)
    available = {**PARAMETERS, **(extra or {}), **_entries(own)}
    names = [name for name in inspect.signature(cls.__init__).parameters
             if name != "self"]
    missing = [name for name in names if name not in available]
    if missing:
        raise TypeError(f"{cls.__name__}: no docstring entry for {missing}.")
    section = "\n".join(available[name] for name in names)
    tail = _shared_attributes(tail)
    # cleandoc removed the indentation under the summary line: put it back,
    # as Python keeps it (help() and doctest read it either way).
    body = intro + title + section + tail
    first, _, rest = body.partition("\n")
    cls.__doc__ = first + "\n" + _indent(rest, "    ")
    return cls


def _shared_attributes(text):
    """``text`` with its attributes marker written out, if it has one.

    The entries of :data:`ATTRIBUTES` that the Attributes section does not
    document itself go where the marker stands.
    """
    head, marker, tail = text.partition(ATTRIBUTES_MARKER)
    if not marker:
        return text
    own = _entries(head.partition("Attributes\n----------\n")[2])
    own.update(_entries(re.split(r"^\S.*\n-+$", tail, maxsplit=1, flags=re.M)[0]))
    shared = [entry for name, entry in ATTRIBUTES.items() if name not in own]
    return head + "\n".join(shared) + tail
