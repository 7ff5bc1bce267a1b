"""Bring your own module: any ``nn.Module`` class trained as a scikit-learn estimator.

:class:`NeuralNetClassifier` and :class:`NeuralNetRegressor` take the class of
a network and its constructor arguments, the way skorch does, and train it on
the shared core (every solver, schedules, early stopping, ``partial_fit``,
``warm_start``, callbacks, augmentation, pickle, ``save``/``load``)::

    class TwoLayer(nn.Module):
        def __init__(self, n_features_in, n_outputs, hidden=64):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(n_features_in, hidden), nn.ReLU(),
                                     nn.Linear(hidden, n_outputs))

        def forward(self, x):
            return self.net(x)

    clf = NeuralNetClassifier(TwoLayer, module__hidden=32).fit(X, y)

What the data says is not restated: constructor arguments named in
:data:`INPUT_ARGUMENTS`, :data:`CHANNEL_ARGUMENTS` and
:data:`OUTPUT_ARGUMENTS` are filled from ``X`` and ``y`` unless given.

Why ``**module_params``
-----------------------
The library's habit is that ``__init__`` names every parameter (scikit-learn's
``clone`` reads the signature). A user's network has arguments no signature
can list, so these two classes take exactly one prefix, ``module__``, in
``**module_params``: each is stored as an attribute under its full name, and
``get_params``/``set_params`` are extended by those keys only. No other
routing (skorch's ``optimizer__``, ``iterator_train__``, ...): the training
settings are ordinary named parameters here.
"""

import difflib
import inspect
import sys
import warnings

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from torch import nn

from sklears_neural.core import registry
from sklears_neural.core._compat import InvalidParameterError, Options
from sklears_neural.core.config import estimator_config
from sklears_neural.core.data import call_module
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.inputs import TABULAR, ArrayInput
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.persistence import save_estimator
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import resolve_device
from sklears_neural.core.seeding import draw_seed
from sklears_neural.core.serialization import StateEncoder, UnsupportedValue
from sklears_neural.core.tasks import NeuralClassifierMixin, NeuralRegressorMixin
from sklears_neural.exceptions import PersistenceWarning

__all__ = [
    "CHANNEL_ARGUMENTS",
    "INPUT_ARGUMENTS",
    "OUTPUT_ARGUMENTS",
    "NeuralNetClassifier",
    "NeuralNetRegressor",
]

#: Constructor arguments filled with the values per sample of ``X``
#: (``n_features_in_``), where the module declares them by name.
INPUT_ARGUMENTS = ("n_features_in", "n_features", "in_features", "input_dim")
#: Filled with the channels of N-D samples (``input_shape_[0]``); not for
#: 2-D rows, which have no channel axis.
CHANNEL_ARGUMENTS = ("in_channels",)
#: Filled with the outputs the task needs (``n_outputs_``): one logit per
#: class for multiclass targets, 1 for binary ones, one per label for
#: multilabel targets, one per target for regression.
OUTPUT_ARGUMENTS = ("n_outputs", "out_features", "output_dim", "n_classes")

_PREFIX = "module__"


class _ModuleClass(Options):
    """An ``nn.Module`` subclass, or the name it is registered under.

    A subclass of scikit-learn's ``Options`` (its validator takes only its
    own constraint classes) with the test overridden, as in ``core._compat``.
    """

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, val):
        if isinstance(val, type):
            return issubclass(val, nn.Module)
        return isinstance(val, str) and val in registry.registered_modules()

    def __str__(self):
        return (
            "a torch.nn.Module subclass (the class itself, not an instance: pass "
            "its constructor arguments as module__<name>=value) or the name of one "
            "registered with sklears_neural.core.registry.register_module (a saved "
            "model names its module class so: before load, import the module "
            "that defines the class, decorated with @register_module)"
        )


def _unexpected_keyword(cls, key):
    names = cls._get_param_names()
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return TypeError(
        f"{cls.__name__}.__init__() got an unexpected keyword argument {key!r}.{hint} "
        "Arguments of the module's constructor take the prefix module__ "
        f"(module__{key.removeprefix(_PREFIX) or 'name'}=value)."
    )


def _plain(value):
    # numpy scalars (a param_grid of np.arange) as Python numbers, so the
    # spec compares and saves as the same plain value.
    return value.item() if isinstance(value, np.generic) else value


def _reachable(cls):
    """Whether ``cls`` is what ``sys.modules[cls.__module__]`` holds at its qualname.

    False for classes defined inside a function (``<locals>`` in the
    qualname) and for classes since redefined under their name (a notebook
    cell run again): no later process could find them by that name.
    """
    if "<locals>" in cls.__qualname__:
        return False
    obj = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def _registered_name(cls, action):
    """The registry name of ``cls``, registering a reachable class first.

    ``load`` finds module classes only through the registry, by name, and
    never imports anything a file names. A class that is not registered is
    registered here, for this process, when it is reachable by its module
    and qualified name (defined at the top level of a module, a script or a
    notebook, not inside a function); a warning says what another process
    needs. Any other class cannot be found again by any process: error.
    """
    try:
        return registry.module_name(cls)
    except TypeError:
        pass
    where = f"{cls.__module__}.{cls.__qualname__}"
    fix = (
        "Define the class at module level and decorate it with @register_module "
        "(from sklears_neural.core.registry import register_module), or pickle the "
        "estimator instead (pickle, joblib)."
    )
    if not _reachable(cls):
        raise TypeError(
            f"Cannot {action}: the module class {where} is defined inside a function "
            "(or was redefined since), so no process could register it again, and "
            f"load finds module classes only through the registry. {fix}"
        )
    try:
        registry.register_module(cls)
    except ValueError as exc:
        raise TypeError(
            f"Cannot {action}: {exc} (from sklears_neural.core.registry import "
            "register_module)"
        ) from None
    warnings.warn(
        f"The module class {where} was not registered; {action} registered it as "
        f"{cls.__name__!r} for this process only. To load the model in another "
        "process, decorate the class with @register_module (from "
        "sklears_neural.core.registry import register_module), so that importing "
        f"{cls.__module__} registers it, and import it before load.",
        PersistenceWarning,
        stacklevel=4,
    )
    return cls.__name__


def _check_json(estimator, action):
    """Every ``module__`` value is plain data that a saved file can hold."""
    encoder = StateEncoder(tensors=False)
    for key, value in estimator._module_params().items():
        try:
            encoder.encode(value, (key,))
        except UnsupportedValue as exc:
            raise TypeError(
                f"Cannot {action} {type(estimator).__name__}: {key} holds a "
                f"{exc.describe()}, and module arguments are written as JSON (int, "
                "float, str, bool, None, and lists, tuples and dicts of them). Pass "
                "plain values and build tensors or layers inside the module's "
                "__init__, or pickle the estimator instead (pickle, joblib)."
            ) from None


#: numpydoc entries of the parameters both estimators share.
_ARCHITECTURE = {
    "module": """\
module : type or str, default=None
    The network: a ``torch.nn.Module`` subclass (the class, not an
    instance), or the name it is registered under with
    :func:`~sklears_neural.core.registry.register_module`. Built at each
    new fit as ``module(**arguments)`` from the ``module__`` parameters,
    plus the arguments it declares among ``INPUT_ARGUMENTS``
    (``n_features_in``, ``n_features``, ``in_features``, ``input_dim``:
    values per sample), ``CHANNEL_ARGUMENTS`` (``in_channels``: channels of
    N-D samples) and ``OUTPUT_ARGUMENTS`` (``n_outputs``, ``out_features``,
    ``output_dim``, ``n_classes``: outputs the task needs) that are not
    given. Its ``forward`` takes a batch of ``X`` (``(batch, n_features)``
    rows, or ``(batch, *input_shape_)`` samples) and returns
    ``(batch, n_outputs_)`` raw outputs: logits for a classifier.""",
    "input_shape": """\
input_shape : tuple of int or None, default=None
    Shape ``(C, *spatial)`` of one sample, 1 to 3 spatial dimensions.
    When given, flat 2-D rows are reshaped to it (``X.reshape(n,
    *input_shape)``, so a ``StandardScaler`` may come first in a
    ``Pipeline``). N-D ``X`` ``(n, C, *spatial)`` is taken as it is, with
    or without it. ``None`` with 2-D ``X``: the module gets the rows.""",
    "module_params": """\
**module_params
    ``module__<name>=value``: argument ``name`` of ``module``'s
    constructor. Only the ``module__`` prefix is taken (any other unknown
    keyword is a ``TypeError``); ``get_params``, ``set_params``, ``clone``
    and ``GridSearchCV(param_grid={"module__hidden": [...]})`` carry them.
    ``save`` writes them as JSON: use plain values (int, float, str, bool,
    None, lists, dicts); others (tensors, callables) train and pickle.""",
}


class _BaseNeuralNet(BaseNeuralEstimator):
    """What the two estimators share: the user's module, its arguments, its input."""

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "module": [_ModuleClass()],
        "input_shape": [None, tuple, list],
    }

    # -- module__ parameters -------------------------------------------------

    def _set_module_params(self, module_params):
        for key, value in module_params.items():
            if not key.startswith(_PREFIX) or key == _PREFIX:
                raise _unexpected_keyword(type(self), key)
            setattr(self, key, value)

    def _module_params(self):
        return {k: v for k, v in sorted(vars(self).items()) if k.startswith(_PREFIX)}

    def get_params(self, deep=True):
        """Get parameters for this estimator, ``module__`` arguments included.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of contained estimators.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        params = super().get_params(deep=deep)
        params.update(self._module_params())
        return params

    def set_params(self, **params):
        """Set the parameters of this estimator, ``module__<name>`` ones included.

        A ``module__<name>`` key sets that constructor argument (new names
        too); the rest go to scikit-learn's ``set_params``.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator instance
        """
        module_params = {
            key: params.pop(key) for key in list(params) if key.startswith(_PREFIX)
        }
        self._set_module_params(module_params)
        return super().set_params(**params)

    # -- the module -------------------------------------------------------------

    def _module_class(self):
        if isinstance(self.module, str):
            return registry.module_class(self.module)
        return self.module

    def _build_module(self, n_features_in, n_outputs):
        cls = self._module_class()
        kwargs = {k[len(_PREFIX):]: _plain(v) for k, v in self._module_params().items()}
        signature = inspect.signature(cls)
        params = {
            name: p for name, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        shape = self.__dict__.get("input_shape_")
        filled = [(INPUT_ARGUMENTS, int(n_features_in)),
                  (OUTPUT_ARGUMENTS, int(n_outputs))]
        if shape is not None:
            filled.append((CHANNEL_ARGUMENTS, int(shape[0])))
        for names, value in filled:
            for name in names:
                if name in params and name not in kwargs:
                    kwargs[name] = value
        takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = [] if takes_any else sorted(set(kwargs) - set(params))
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(params), n=1)
            hint = f" Did you mean module__{close[0]}?" if close else ""
            raise InvalidParameterError(
                f"{cls.__name__} takes no argument {unknown[0]!r} (given as "
                f"module__{unknown[0]} to {type(self).__name__}).{hint} Its "
                f"arguments: {', '.join(params) or 'none'}."
            )
        missing = [
            name for name, p in params.items()
            if p.default is p.empty and name not in kwargs
        ]
        if missing:
            raise InvalidParameterError(
                f"{cls.__name__} needs the argument {missing[0]!r}: pass "
                f"module__{missing[0]}=... to {type(self).__name__}. (Arguments "
                f"named {', '.join(INPUT_ARGUMENTS + OUTPUT_ARGUMENTS)} are filled "
                "from the data.)"
            )
        return ModuleSpec(cls, kwargs)

    def _forward(self, module, inputs):
        try:
            output = call_module(module, inputs)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ValueError(self._failure(module, inputs, exc)) from exc
        n_rows = (inputs[0] if type(inputs) is tuple else inputs).shape[0]
        if (
            not isinstance(output, torch.Tensor)
            or output.shape != (n_rows, self.n_outputs_)
        ):
            raise ValueError(self._wrong_output(module, inputs, output))
        return output

    def _built_as(self, module):
        spec = self.__dict__.get("_module_spec_")
        kwargs = spec.kwargs if spec is not None else {}
        arguments = ", ".join(f"{k}={v!r:.40}" for k, v in kwargs.items())
        return f"{type(module).__name__}({arguments})"

    def _failure(self, module, inputs, exc):
        x = inputs[0] if type(inputs) is tuple else inputs
        message = (
            f"{type(module).__name__} failed on a batch of shape {tuple(x.shape)} "
            f"({type(exc).__name__}: {exc}). It was built as {self._built_as(module)}; "
            f"the data has {self.n_features_in_} values per sample"
        )
        shape = self.__dict__.get("input_shape_")
        if shape is not None:
            message += f", samples of shape {shape}"
        return message + "." + self._overridden(INPUT_ARGUMENTS + CHANNEL_ARGUMENTS)

    def _overridden(self, names):
        """The ``module__`` arguments among ``names`` the user set, as a hint."""
        given = sorted(set(self._module_params()) & {_PREFIX + n for n in names})
        if not given:
            return ""
        return (
            f" {', '.join(given)} overrides what the data says: leave it out to "
            "have it filled from the data."
        )

    def _wrong_output(self, module, inputs, output):
        x = inputs[0] if type(inputs) is tuple else inputs
        n_rows = x.shape[0]
        if not isinstance(output, torch.Tensor):
            got, fix = f"a {type(output).__name__}", "Return one tensor from forward."
        else:
            got = f"an output of shape {tuple(output.shape)}"
            if output.ndim != 2:
                fix = ("Return a 2-D tensor, one row per sample (do not squeeze the "
                       "last axis).")
            elif output.shape[0] != n_rows:
                fix = "Return one row per sample of the batch."
            else:
                fix = (
                    f"It was built as {self._built_as(module)}. Declare one of "
                    f"{', '.join(OUTPUT_ARGUMENTS)} in its __init__ to receive the "
                    f"width, or pass module__<name>={self.n_outputs_}."
                    + self._overridden(OUTPUT_ARGUMENTS)
                )
        return (
            f"{type(module).__name__} returned {got} for a batch of shape "
            f"{tuple(x.shape)}; {type(self).__name__} needs a tensor of shape "
            f"({n_rows}, {self.n_outputs_}): {self._outputs_meaning()}. {fix}"
        )

    # -- input -------------------------------------------------------------------

    def _input_kind(self):
        if self.input_shape is not None or self.__dict__.get("_array_input", False):
            return ArrayInput(input_shape=self.input_shape, spatial_dims=(1, 2, 3))
        return TABULAR

    def _choose_input(self, X, reset):
        """In a new fit, decide between 2-D rows and N-D samples from ``X``."""
        if not reset:
            return
        ndim = getattr(X, "ndim", None)
        if ndim is None:  # nested lists, array-likes
            try:
                ndim = np.asarray(X).ndim
            except (ValueError, TypeError):  # ragged: validation says more
                ndim = 2
        self._array_input = self.input_shape is not None or ndim > 2
        if not self._array_input:
            self.input_shape_ = None

    # -- randomness ------------------------------------------------------------------

    def _fit(self, X, y, sample_weight=None, **kwargs):
        # Layers of a user's module draw from torch's global generator
        # (nn.Dropout, torch.rand in forward). During a fit it runs a stream
        # seeded from the fit's generator (in _make_dataset), so
        # random_state fixes them too; the caller's stream is restored after.
        try:
            device = resolve_device(self.device)
        except ValueError:
            device = torch.device("cpu")  # the fit reports the bad device
        devices = []
        if device.type == "cuda":
            devices = [device.index if device.index is not None
                       else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=devices):
            return super()._fit(X, y, sample_weight, **kwargs)

    def _make_dataset(self, X, targets=None, sample_weight=None, *, dtype, device):
        # Called by fit once the module and the fit's generator exist, right
        # before training (and for the validation split), inside _fit's fork.
        seed = draw_seed(self._generator)
        torch.default_generator.manual_seed(seed)
        if torch.device(device).type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        return super()._make_dataset(X, targets, sample_weight, dtype=dtype,
                                     device=device)

    # -- files -----------------------------------------------------------------------

    def _file_view(self, action):
        """``self`` with ``module`` as its registered name, for the file formats.

        A shallow view: the same fitted state, only the ``module`` parameter
        differs, so ``save`` and ``get_config`` write a name that ``load``
        and ``from_config`` look up in the registry. ``save`` refuses what
        it cannot write; ``get_config`` leaves that to the core, which
        records such a parameter as null with a warning.
        """
        if action == "save":
            _check_json(self, action)
        if not isinstance(self.module, type):
            return self
        try:
            name = _registered_name(self.module, action)
        except TypeError:
            if action == "save":
                raise
            return self
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.module = name
        return view

    def save(self, path, *, metadata=None):
        """Save to a directory or ``.zip`` file; :func:`sklears_neural.load` reads it.

        As :meth:`BaseNeuralEstimator.save
        <sklears_neural.core.persistence.SaveLoadMixin.save>`, with the
        module class written by its registered name (``load`` never imports
        what a file names). A class that is not registered is registered
        for this process, with a warning, when it is defined at the top
        level of a module, script or notebook; another process must import
        its module, with the class decorated by ``@register_module``,
        before ``load``.

        Parameters
        ----------
        path : str or os.PathLike
            A path ending in ``.zip`` writes one zip file; anything else is a
            directory.
        metadata : dict, default=None
            JSON data of yours, returned by ``read_info``.

        Raises
        ------
        TypeError
            If the module class is defined inside a function, its name is
            registered to another class, or a ``module__`` value is not JSON
            data (a tensor, a callable): pickle the estimator then.

        Warns
        -----
        PersistenceWarning
            When the module class is registered here, for this process.
        """
        save_estimator(self._file_view("save"), path, metadata=metadata)

    def get_config(self):
        """The class and parameters as JSON-able data, the module class by name.

        See :meth:`~sklears_neural.core.persistence.SaveLoadMixin.get_config`;
        the module class is registered as :meth:`save` does.

        Returns
        -------
        config : dict
        """
        return estimator_config(self._file_view("get_config"), stacklevel=3)

    def to_onnx(self, path=None):
        """Export to ONNX: for a module fitted on 2-D rows that ``torch.onnx`` exports.

        See :meth:`BaseNeuralEstimator.to_onnx
        <sklears_neural.core.estimator.BaseNeuralEstimator.to_onnx>`; the
        graph takes float32 ``X`` of shape (n_samples, n_features_in_).

        Parameters
        ----------
        path : str or os.PathLike, default=None
            Also write the model to this file.

        Returns
        -------
        model : bytes

        Raises
        ------
        ValueError
            If the model was fitted on N-D samples (``input_shape_``), or
            the module has a layer ``torch.onnx`` cannot export.
        """
        if self.__dict__.get("input_shape_") is not None:
            raise ValueError(
                f"to_onnx exports models of 2-D rows; this {type(self).__name__} "
                f"takes samples of shape {self.input_shape_}. Export its module_ "
                "with torch.onnx.export directly."
            )
        return super().to_onnx(path)


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class NeuralNetClassifier(NeuralClassifierMixin, ClassifierMixin, _BaseNeuralNet):
    """Classifier that trains your own ``nn.Module`` class, as skorch's does.

    The module returns logits: one per class for multiclass targets, one for
    binary targets (the logit of ``classes_[1]``), one per label for
    multilabel ones. Training minimizes the log-loss (softmax or logistic)
    with the library's solvers; predictions, probabilities and every
    scikit-learn tool work as with :class:`~sklears_neural.MLPClassifier`.

    Parameters
    ----------
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight``; ``"balanced"``
        uses ``n_samples / (n_classes * np.bincount(y))``.
    <shared parameters>

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    out_activation_ : str
        ``"softmax"`` or ``"logistic"``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    <shared attributes>
    n_features_in_ : int
        Values per sample seen in fit (features of a row).
    input_shape_ : tuple of int or None
        Shape of one sample given to the module; ``None`` for 2-D rows.
    n_outputs_ : int
        Outputs of the module.
    module_ : torch.nn.Module
        The trained network, an instance of ``module``.

    See Also
    --------
    NeuralNetRegressor : The regression counterpart.
    MLPClassifier : A fully connected network without writing a module.

    Notes
    -----
    The module is built inside ``fit`` with torch's global generator forked
    and seeded from ``random_state``, then initialized by its own
    ``reset_parameters`` if it has one; layers that draw from the global
    generator in training (``nn.Dropout``) draw from a stream seeded from
    ``random_state`` too, so a seed fixes the whole fit, and the caller's
    global stream is left as it was.

    Sequences of varying lengths are the RNN and Transformer families' input.
    Lazy layers (``nn.LazyLinear``) are not supported: declare
    ``n_features_in`` instead, which the data fills.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from torch import nn
    >>> from sklears_neural.models.neural_net import NeuralNetClassifier
    >>> class Net(nn.Module):
    ...     def __init__(self, n_features_in, n_outputs, hidden=16):
    ...         super().__init__()
    ...         self.body = nn.Sequential(nn.Linear(n_features_in, hidden),
    ...                                   nn.Tanh(), nn.Linear(hidden, n_outputs))
    ...     def forward(self, x):
    ...         return self.body(x)
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = NeuralNetClassifier(Net, module__hidden=8, solver="lbfgs",
    ...                           random_state=0).fit(X, y)
    >>> clf.module_.body[0].in_features, clf.module_.body[2].out_features
    (4, 3)
    >>> bool(clf.score(X, y) > 0.95)
    True
    """

    _parameter_constraints: dict = {
        **_BaseNeuralNet._parameter_constraints,
        **NeuralClassifierMixin._parameter_constraints,
    }

    def __init__(
        self,
        module=None,
        *,
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
        **module_params,
    ):
        self.module = module
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
        self._set_module_params(module_params)

    def _validate_training_data(self, X, y, sample_weight, **kwargs):
        self._choose_input(X, kwargs["reset"])
        return super()._validate_training_data(X, y, sample_weight, **kwargs)

    def _outputs_meaning(self):
        if not self._is_multiclass():
            if self._label_binarizer.y_type_ == "binary":
                positive = self.classes_.tolist()[-1]
                return f"one logit, of class {positive!r} (binary targets)"
            return "one logit per label"
        return f"one logit per class ({len(self.classes_)} classes)"


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class NeuralNetRegressor(NeuralRegressorMixin, RegressorMixin, _BaseNeuralNet):
    """Regressor that trains your own ``nn.Module`` class, as skorch's does.

    The module returns one value per target, shape ``(batch, n_targets)``
    (``(batch, 1)`` for 1-D ``y``). Training minimizes half the squared
    error (or half the Poisson deviance of ``exp`` of the output) with the
    library's solvers; every scikit-learn tool works as with
    :class:`~sklears_neural.MLPRegressor`.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"poisson"`` needs ``y >= 0`` and predicts ``exp`` of the module's
        output.
    <shared parameters>

    Attributes
    ----------
    out_activation_ : str
        ``"identity"`` or ``"exp"``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    <shared attributes>
    n_features_in_ : int
        Values per sample seen in fit (features of a row).
    input_shape_ : tuple of int or None
        Shape of one sample given to the module; ``None`` for 2-D rows.
    n_outputs_ : int
        Outputs of the module.
    module_ : torch.nn.Module
        The trained network, an instance of ``module``.

    See Also
    --------
    NeuralNetClassifier : The classification counterpart, with the details.
    MLPRegressor : A fully connected network without writing a module.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from torch import nn
    >>> from sklears_neural.models.neural_net import NeuralNetRegressor
    >>> class Linear(nn.Module):
    ...     def __init__(self, in_features, out_features):
    ...         super().__init__()
    ...         self.linear = nn.Linear(in_features, out_features)
    ...     def forward(self, x):
    ...         return self.linear(x)
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1, random_state=0)
    >>> reg = NeuralNetRegressor(Linear, solver="lbfgs").fit(X, y)
    >>> reg.module_.linear
    Linear(in_features=5, out_features=1, bias=True)
    >>> bool(reg.score(X, y) > 0.99)
    True
    """

    _parameter_constraints: dict = {
        **_BaseNeuralNet._parameter_constraints,
        **NeuralRegressorMixin._parameter_constraints,
    }

    def __init__(
        self,
        module=None,
        *,
        input_shape=None,
        loss="squared_error",
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
        **module_params,
    ):
        self.module = module
        self.input_shape = input_shape
        self.loss = loss
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
        self._set_module_params(module_params)

    def _validate_training_data(self, X, y, sample_weight, **kwargs):
        self._choose_input(X, kwargs["reset"])
        return super()._validate_training_data(X, y, sample_weight, **kwargs)

    def _outputs_meaning(self):
        return f"one value per target ({self.n_outputs_})"
