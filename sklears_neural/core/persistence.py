"""Two ways to persist an estimator: pickle, and ``save``/``load``.

Pickle (and joblib) for scikit-learn users: a pickled estimator holds numpy
arrays, never torch tensors or devices. The module is stored as its
:class:`~sklears_neural.core.layers.ModuleSpec` plus a ``state_dict`` of
arrays, the optimizer as its state of arrays, the generator as its byte
state. Loading rebuilds them on the estimator's device when this machine has
it, else on the CPU, so a model fitted on a GPU loads on a CPU-only machine.

``est.save(path)`` and :func:`load` for files that may come from anyone: a
directory or ``.zip`` holding ``config.json`` and a safetensors file of
weights (see :mod:`sklears_neural.core.serialization`). Loading runs no code
from the file: no unpickling, classes only from
:mod:`sklears_neural.core.registry`. What it reads is bounded before it is
read, and what it builds is checked against the weights first.
The loaded estimator predicts exactly as the saved one and continues
``partial_fit`` / ``warm_start`` with its optimizer state, early-stopping
state and random generator.
"""

import datetime
import numbers
import os
import warnings

import numpy as np
import torch

from sklears_neural._version import __version__
from sklears_neural.core import registry, serialization
from sklears_neural.core.config import estimator_config
from sklears_neural.core.resolve import resolve_device
from sklears_neural.core.serialization import (
    ModelFileError,
    PendingModule,
    PendingOptimizer,
    PersistenceWarning,
    StateDecoder,
    StateEncoder,
)

__all__ = [
    "PicklableStateMixin",
    "SaveLoadMixin",
    "load",
    "read_info",
    "save_estimator",
    "to_numpy_tree",
    "to_torch_tree",
]


def to_numpy_tree(obj):
    """Replace every tensor in nested dicts/lists/tuples by a numpy array."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: to_numpy_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy_tree(v) for v in obj)
    return obj


def to_torch_tree(obj):
    """Inverse of :func:`to_numpy_tree`: numpy arrays back to tensors."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        return {k: to_torch_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_torch_tree(v) for v in obj)
    return obj


def _loading_device(device_param):
    try:
        return resolve_device(device_param)
    except ValueError:
        return torch.device("cpu")


class PicklableStateMixin:
    """``__getstate__``/``__setstate__`` that turn torch state into numpy."""

    def __getstate__(self):
        # object.__getstate__ returns the live __dict__: copy before editing.
        state = dict(super().__getstate__())
        if "module_" in state:
            state["module_"] = to_numpy_tree(self.module_.state_dict())
        if state.get("_optimizer") is not None:
            state["_optimizer"] = to_numpy_tree(self._optimizer.state_dict())
        if state.get("_generator") is not None:
            state["_generator"] = self._generator.get_state().numpy()
        if state.get("_scaler") is not None:
            # A CUDA loss scaler holds device tensors; it re-calibrates in a
            # few steps, so it is not carried over.
            state["_scaler"] = None
        if state.get("_stopping") is not None and state["_stopping"].best_state:
            stopping = state["_stopping"].__class__.__new__(state["_stopping"].__class__)
            stopping.__dict__.update(state["_stopping"].__dict__)
            stopping.best_state = to_numpy_tree(stopping.best_state)
            state["_stopping"] = stopping
        return state

    def __setstate__(self, state):
        module_state = state.pop("module_", None)
        had_optimizer = "_optimizer" in state
        optimizer_state = state.pop("_optimizer", None)
        generator_state = state.pop("_generator", None)
        super().__setstate__(state)
        if generator_state is not None:
            self._generator = torch.Generator()
            self._generator.set_state(torch.from_numpy(generator_state))
        if self.__dict__.get("_stopping") is not None and self._stopping.best_state:
            self._stopping.best_state = to_torch_tree(self._stopping.best_state)
        if module_state is None:
            return
        module = self._module_spec_.build()
        # assign=True keeps the saved dtype (float32 or float64 training).
        module.load_state_dict(to_torch_tree(module_state), assign=True)
        self.module_ = module.to(_loading_device(self.device))
        from sklears_neural.core.noise import set_generator

        set_generator(self.module_, self.__dict__.get("_generator"))
        if had_optimizer:
            self._optimizer = None
        if optimizer_state is not None:
            from sklears_neural.core.optim import make_optimizer

            optimizer = make_optimizer(self.module_, _SolverView(state))
            optimizer.load_state_dict(to_torch_tree(optimizer_state))
            self._optimizer = optimizer


class _SolverView:
    """The estimator settings an optimizer was built from, read from a state dict.

    The optimizer is rebuilt with the solver it was trained with, which may
    differ from the current ``solver`` parameter after ``set_params``.
    """

    def __init__(self, state):
        self.__dict__.update(state)
        self.solver = state.get("_optimizer_solver", state["solver"])


# -- save / load (JSON + safetensors) ------------------------------------------

# scikit-learn bookkeeping a saved model does without: metadata-routing
# requests, which set_fit_request() stores as an object.
_SKIPPED_ATTRIBUTES = ("_metadata_request",)
# Saved as None, as pickling does: a mixed-precision loss scaler re-calibrates
# in a few steps and holds device tensors.
_RESET_ATTRIBUTES = ("_scaler",)


def _plain_metadata(value, path="metadata"):
    """``value`` as plain JSON data (numpy scalars become Python ones)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain_metadata(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{path} has the key {key!r}: metadata keys must be str."
                )
            plain[key] = _plain_metadata(item, f"{path}[{key!r}]")
        return plain
    raise TypeError(
        f"{path} is {value!r:.80} ({type(value).__name__}): metadata must be JSON data "
        "(dicts with str keys, lists, str, int, finite float, bool, None)."
    )


def _holds_only_callbacks(value):
    from sklears_neural.core.callbacks import Callback

    return isinstance(value, (list, tuple)) and all(
        isinstance(v, Callback) for v in value
    )


def _module_root(name):
    # module_ -> "module.<key>"; another module attribute keeps its own prefix.
    return "module" if name == "module_" else name.strip("_")


def _encode_attribute(estimator, name, value, encoder):
    if isinstance(value, torch.nn.Module):
        spec_name = "_module_spec_" if name == "module_" else f"_{name}spec_"
        spec = getattr(estimator, spec_name, None)
        if spec is None:
            raise TypeError(
                f"Cannot save {type(estimator).__name__}: its module {name!r} has no "
                f"ModuleSpec in {spec_name!r}, so it could not be rebuilt."
            )
        return encoder.encode_module(value, spec, (_module_root(name),))
    if isinstance(value, torch.optim.Optimizer):
        root = "optimizer" if name == "_optimizer" else name.strip("_")
        return encoder.encode(value, (root,))
    return encoder.encode(value, ("attrs", name))


def save_estimator(estimator, path, *, metadata=None):
    """Write ``estimator`` to ``path``: the function behind ``est.save``.

    See :meth:`SaveLoadMixin.save`.
    """
    from safetensors.torch import save as safetensors_bytes

    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(
            f"metadata must be a dict or None, got {type(metadata).__name__}."
        )
    metadata = _plain_metadata(metadata)
    # Warnings name the line that called est.save.
    config = estimator_config(estimator, stacklevel=4)
    encoder = StateEncoder()
    params = set(estimator.get_params(deep=False))
    state = {}
    for name, value in vars(estimator).items():
        if name in params:
            continue
        if name in _SKIPPED_ATTRIBUTES:
            warnings.warn(
                f"{name} (metadata routing requests) is not saved; set them again "
                "on the loaded estimator.",
                PersistenceWarning,
                stacklevel=3,
            )
            continue
        if name in _RESET_ATTRIBUTES:
            state[name] = None
            continue
        try:
            state[name] = _encode_attribute(estimator, name, value, encoder)
        except serialization.UnsupportedValue as exc:
            if _holds_only_callbacks(value):
                # The fitted copies of ``callbacks`` (user objects, code):
                # dropped like the parameter they copy.
                warnings.warn(
                    f"{name} holds callback objects, which the save format cannot "
                    "hold: it is saved as None, and the loaded estimator's next "
                    "partial_fit starts from fresh copies of its callbacks.",
                    PersistenceWarning,
                    stacklevel=3,
                )
                state[name] = None
                continue
            where = ".".join(str(p) for p in exc.path)
            raise TypeError(
                f"Cannot save {type(estimator).__name__}: its attribute {name!r} "
                f"holds a {exc.describe()} (at {where}), which the save format "
                "cannot hold. "
                "Pickle the estimator instead, or teach "
                "sklears_neural.core.serialization that type."
            ) from None
    weights = safetensors_bytes(encoder.tensors)
    created = datetime.datetime.now(datetime.timezone.utc)
    document = {
        "format": serialization.FORMAT_NAME,
        "format_version": serialization.FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "created": created.isoformat(timespec="seconds"),
        "class": config["class"],
        "params": config["params"],
        "state": state,
        "metadata": metadata,
    }
    # write_archive adds the "weights" entry: the file name, hash and size.
    serialization.write_archive(path, document, weights)


def _read(path, *, weights=True):
    where = os.fspath(path)
    with serialization.ArchiveReader(where) as archive:
        raw = serialization.parse_config(archive.read_config(), where=where)
        config = serialization.migrate(raw, where=where)
        for key, kind in (("class", str), ("params", dict), ("state", dict),
                          ("weights", dict), ("metadata", dict)):
            if not isinstance(config.get(key), kind):
                raise ModelFileError(
                    f"{where}: {serialization.CONFIG_NAME} has no valid {key!r} entry; "
                    "it was edited or is not a sklears-neural model."
                )
        weights_bytes = archive.read_weights(config) if weights else None
    return raw, config, weights_bytes


def read_info(path):
    """What a saved model says about itself, without loading it.

    Reads ``config.json`` only: neither the weights nor any class is loaded.

    Parameters
    ----------
    path : str or os.PathLike
        A directory or ``.zip`` file written by ``save``.

    Returns
    -------
    info : dict
        ``class``, ``params`` (decoded), ``format_version`` (as written),
        ``library_version``, ``torch_version``, ``created`` (UTC, ISO 8601)
        and the user's ``metadata``.
    """
    raw, config, _ = _read(path, weights=False)
    return {
        "class": config["class"],
        "params": serialization.decode_params(config["params"], where=os.fspath(path)),
        "format_version": raw["format_version"],
        "library_version": raw.get("library_version"),
        "torch_version": raw.get("torch_version"),
        "created": raw.get("created"),
        "metadata": config["metadata"],
    }


def _parse_weights(data, config, where):
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    name, recorded = config["weights"]["file"], config["weights"].get("sha256")
    if serialization.sha256(data) != recorded:
        raise ModelFileError(
            f"{where}: {name} ({len(data)} bytes) does not "
            f"match the SHA-256 recorded in {serialization.CONFIG_NAME} (written: "
            f"{config['weights'].get('bytes')} bytes). It was truncated or edited; "
            "save the model again from its source."
        )
    try:
        return safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFileError(
            f"{where}: {name} is not a valid safetensors "
            f"file ({exc})."
        ) from None


def _build_estimator(config, where):
    from sklears_neural.core.config import instantiate

    try:
        cls = registry.estimator_class(config["class"])
    except ValueError as exc:
        raise ModelFileError(f"{where}: {exc}") from None
    params = serialization.decode_params(config["params"], where=where)
    try:
        return instantiate(cls, params)
    except ValueError as exc:
        written_by = config.get("library_version")
        hint = (
            f" The file was written by sklears-neural {written_by}, newer than this "
            f"{__version__}: upgrade sklears-neural."
            if serialization.newer_library(written_by) else ""
        )
        raise ModelFileError(f"{where}: {exc}{hint}") from None


# Composite options such as ("prelu", {"per_channel": True}) are lists that
# carry no tensor of their own.
_SPEC_LIST_SLACK = 8


def _longest_list(value):
    if isinstance(value, dict):
        return max(map(_longest_list, value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return max([len(value), *map(_longest_list, value)])
    return 0


def _check_module_tensors(spec, saved, where):
    """The saved tensors fit the module the spec builds: names, shapes, dtypes.

    Returns
    -------
    module : torch.nn.Module
        Built on the meta device: its shapes, without memory.
    """
    name = spec.module_class.__name__
    # Each layer a spec lists (hidden_layer_sizes) holds a tensor at least, so
    # a longer list is an edit; refused before it costs a build per entry.
    longest = _longest_list(spec.kwargs)
    if longest > len(saved) + _SPEC_LIST_SLACK:
        raise ModelFileError(
            f"{where}: the saved arguments of {name} list {longest} items, but its "
            f"saved weights hold {len(saved)} tensors. The file was edited."
        )
    try:
        # On the meta device: checks a (possibly edited) spec without
        # allocating its weights.
        with torch.device("meta"):
            meta = spec.module_class(**spec.kwargs)
        expected = meta.state_dict()
    except Exception as exc:  # any failure of the file's kwargs is a bad file
        raise ModelFileError(
            f"{where}: cannot build {name} from the saved arguments "
            f"{spec.kwargs!r:.200}: {exc}"
        ) from None
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{where}: the saved weights do not fit {name}: missing {missing[:5]}, "
            f"unexpected {extra[:5]}. The file was edited."
        )
    for key, reference in expected.items():
        tensor = saved[key]
        dtype_ok = (
            tensor.dtype.is_floating_point if reference.dtype.is_floating_point
            else tensor.dtype == reference.dtype
        )
        if tensor.shape != reference.shape or not dtype_ok:
            floating = reference.dtype.is_floating_point
            needed = "a floating" if floating else reference.dtype
            raise ModelFileError(
                f"{where}: weight {key!r} of {name} has shape {tuple(tensor.shape)} "
                f"and dtype {tensor.dtype}; the module needs shape "
                f"{tuple(reference.shape)} and {needed} dtype. The file was edited."
            )
    return meta


def _check_counts(attrs, where):
    """Counts (scikit-learn's ``n_*`` attributes, and ``t_``) are ints >= 0."""
    for name, value in attrs.items():
        if (name == "t_" or name.lstrip("_").startswith("n_")) and (
            type(value) is not int or value < 0
        ):
            raise ModelFileError(
                f"{where}: the fitted attribute {name} is {value!r:.50}, but it counts "
                "something: it must be an int >= 0. The file was edited."
            )


def _check_fitted_together(attrs, where):
    """Attributes ``fit`` sets together are all there, and agree.

    A network needs the width ``predict`` checks ``X`` against, and a
    classifier's labels must be those its outputs stand for: one output per
    class (multiclass, multilabel) or one for both (binary).
    """
    if "module_" in attrs and "n_features_in_" not in attrs:
        raise ModelFileError(
            f"{where}: the fitted state has a network (module_) but no "
            "n_features_in_. The file was edited."
        )
    binarizer, classes = attrs.get("_label_binarizer"), attrs.get("classes_")
    if binarizer is None or classes is None:
        return
    if not np.array_equal(getattr(binarizer, "classes_", None), classes):
        raise ModelFileError(
            f"{where}: classes_ differs from the classes the labels are encoded "
            "with (_label_binarizer.classes_). The file was edited."
        )
    n_outputs = attrs.get("n_outputs_")
    expected = 1 if getattr(binarizer, "y_type_", None) == "binary" else len(classes)
    if n_outputs is not None and n_outputs != expected:
        raise ModelFileError(
            f"{where}: n_outputs_ is {n_outputs}, but {len(classes)} "
            f"{binarizer.y_type_} classes need {expected} outputs. The file was "
            "edited."
        )


def _check_widths(meta, n_inputs, n_outputs, where):
    """The network takes rows of ``n_features_in_`` values, gives ``n_outputs_``.

    ``predict`` checks ``X`` against ``n_features_in_``: a value the weights
    do not take would load and fail there. One row through the network on
    the meta device tells, for any module, with no memory and no arithmetic.
    """
    name = type(meta).__name__
    try:
        with torch.no_grad():
            out = meta.eval()(torch.empty(1, n_inputs, device="meta"))
    except Exception as exc:  # whatever the layer says: the widths disagree
        raise ModelFileError(
            f"{where}: n_features_in_ is {n_inputs}, but the saved {name} does not "
            f"take rows of {n_inputs} values ({exc}). The file was edited."
        ) from None
    if n_outputs is not None and tuple(out.shape) != (1, n_outputs):
        raise ModelFileError(
            f"{where}: n_outputs_ is {n_outputs}, but the saved {name} gives rows of "
            f"{tuple(out.shape)[1:]} values. The file was edited."
        )


def _build_module(pending, device, where, *, n_inputs=None, n_outputs=None):
    meta = _check_module_tensors(pending.spec, pending.state, where)
    if n_inputs is not None:
        _check_widths(meta, n_inputs, n_outputs, where)
    module = pending.spec.build()
    # assign=True keeps the saved dtype (float32 or float64 training).
    module.load_state_dict(pending.state, assign=True)
    return module.to(device)


def _same_kind(saved, reference):
    """Whether ``saved`` is the kind of value ``reference`` is: number, flag, tuple."""
    if reference is None or isinstance(reference, bool):
        # foreach/fused: None or a flag, by machine and torch version.
        return saved is None or isinstance(saved, bool)
    if isinstance(reference, numbers.Real):
        return isinstance(saved, numbers.Real) and not isinstance(saved, bool)
    if isinstance(reference, (tuple, list)):
        return isinstance(saved, (tuple, list)) and len(saved) == len(reference) and (
            all(map(_same_kind, saved, reference)))
    return type(saved) is type(reference)


def _check_hyperparameters(groups, optimizer, where):
    """The saved ``param_groups`` hold what the rebuilt optimizer's hold.

    ``load_state_dict`` takes any value (``"lr": "x"``), which would fail at
    the next step. A setting the rebuilt optimizer lacks (``initial_lr``, or
    one a newer torch adds) must be a number, a flag or None.
    """
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups) or (
        not all(isinstance(group, dict) for group in groups)
    ):
        raise ModelFileError(f"{where}: malformed optimizer parameter groups.")
    for group, reference in zip(groups, optimizer.param_groups):
        for key, value in group.items():
            if key == "params":
                continue
            if key in reference:
                fits = _same_kind(value, reference[key])
            else:
                fits = value is None or isinstance(value, numbers.Real)
            if not fits:
                held = reference.get(key, "a number")
                raise ModelFileError(
                    f"{where}: optimizer setting {key!r:.50} is {value!r:.50}, but "
                    f"{type(optimizer).__name__} holds {held!r:.50} there. The file "
                    "was edited."
                )


def _build_optimizer(pending, estimator, attrs, where):
    from sklears_neural.core.optim import make_optimizer

    module = attrs.get("module_")
    if not isinstance(module, torch.nn.Module):
        raise ModelFileError(f"{where}: optimizer state without a module.")
    try:
        optimizer = make_optimizer(module, _SolverView({**vars(estimator), **attrs}))
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: cannot rebuild the optimizer: {exc}") from None
    if optimizer is None or type(optimizer).__name__ != pending.class_name:
        raise ModelFileError(
            f"{where}: the saved optimizer is a {pending.class_name}, but the saved "
            f"solver builds {type(optimizer).__name__ if optimizer else 'none'}."
        )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = pending.state_dict.get("state")
    if not isinstance(state, dict):
        raise ModelFileError(f"{where}: malformed optimizer state.")
    for index, entry in state.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(
            entry, dict
        ):
            raise ModelFileError(
                f"{where}: optimizer state for unknown parameter {index!r:.50}."
            )
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim and (
                value.shape != params[index].shape
            ):
                raise ModelFileError(
                    f"{where}: optimizer state {key!r} of parameter {index} has shape "
                    f"{tuple(value.shape)}, the parameter {tuple(params[index].shape)}."
                )
    _check_hyperparameters(pending.state_dict.get("param_groups"), optimizer, where)
    try:
        optimizer.load_state_dict(pending.state_dict)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise ModelFileError(
            f"{where}: the optimizer state does not load: {exc}"
        ) from None
    return optimizer


def load(path):
    """Load an estimator written by ``est.save(path)``; runs no code from the file.

    The file is checked before anything is built: the size of each entry
    before it is read (``config.json`` at most
    :data:`~sklears_neural.core.serialization.MAX_CONFIG_BYTES`, the weights
    at most the size it records, no zip entry inflating more than
    :data:`~sklears_neural.core.serialization.MAX_INFLATION` times), format
    version, the SHA-256 of the weights, class names (from the registry only,
    never an import path), parameter values, every tensor's shape and dtype
    against the rebuilt module, the optimizer's state and settings against the
    rebuilt optimizer, and the fitted state: counts (``n_*_``,
    ``t_``) are ints >= 0, the network takes ``n_features_in_`` inputs and
    gives ``n_outputs_`` outputs. Nothing half-loaded is returned.

    Parameters
    ----------
    path : str or os.PathLike
        A directory, or a ``.zip`` file.

    Returns
    -------
    estimator
        A new estimator, fitted if the saved one was: it predicts exactly
        as the saved one and continues ``partial_fit``/``warm_start`` with
        its optimizer state and random generator. The module goes to the
        estimator's ``device`` when this machine has it, else to the CPU.

    Raises
    ------
    ModelFileError
        A ``ValueError``: the file is corrupt, truncated, padded or edited,
        is not a saved model (an empty directory), names an unknown class, or
        uses a newer format (upgrade sklears-neural).
    FileNotFoundError
        If nothing is at ``path``.

    See Also
    --------
    read_info : The versions, creation time and metadata of a saved model.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.datasets import load_iris
    >>> import sklears_neural
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = sklears_neural.MLPClassifier((8,), solver="lbfgs", random_state=0)
    >>> clf = clf.fit(X, y)
    >>> path = os.path.join(tempfile.mkdtemp(), "iris.zip")
    >>> clf.save(path, metadata={"data": "iris"})
    >>> loaded = sklears_neural.load(path)
    >>> bool((loaded.predict_proba(X) == clf.predict_proba(X)).all())
    True
    >>> read_info(path)["metadata"]
    {'data': 'iris'}
    """
    where = os.fspath(path)
    _, config, weights = _read(path)
    tensors = _parse_weights(weights, config, where)
    estimator = _build_estimator(config, where)
    params = set(estimator.get_params(deep=False))
    decoder = StateDecoder(tensors, where=where)
    attrs = {}
    for name, value in config["state"].items():
        serialization.check_attribute_name(type(estimator), name, where)
        if name in params:
            raise ModelFileError(f"{where}: fitted state names the parameter {name!r}.")
        attrs[name] = decoder.decode_attribute(value)
    decoder.check_all_used()
    _check_counts(attrs, where)
    device = _loading_device(getattr(estimator, "device", "cpu"))
    for name, value in attrs.items():
        if isinstance(value, PendingModule):
            # module_ is the network predict feeds X to.
            widths = {} if name != "module_" else {
                "n_inputs": attrs.get("n_features_in_"),
                "n_outputs": attrs.get("n_outputs_"),
            }
            attrs[name] = _build_module(value, device, where, **widths)
            if isinstance(attrs.get("_generator"), torch.Generator):
                from sklears_neural.core.noise import set_generator

                # Dropout and noise masks draw from the fit's generator, as
                # after fit and after unpickling.
                set_generator(attrs[name], attrs["_generator"])
    _check_fitted_together(attrs, where)  # after the widths, which say more
    for name, value in attrs.items():
        if isinstance(value, PendingOptimizer):
            attrs[name] = _build_optimizer(value, estimator, attrs, where)
    estimator.__dict__.update(attrs)
    return estimator


class SaveLoadMixin:
    """``save`` and ``get_config`` for every estimator; :func:`load` reads back."""

    def save(self, path, *, metadata=None):
        """Save the estimator to a directory or a ``.zip`` file, without pickle.

        Writes ``config.json`` (class, parameters, fitted attributes,
        versions, creation time, ``metadata``, the name, size and SHA-256 of
        the weights) and a safetensors file (module weights, optimizer state,
        numeric fitted arrays): ``model.safetensors`` in a zip,
        ``model-<hash>.safetensors`` in a directory. Read it back with
        :func:`sklears_neural.load`, which runs no code from the file: safe
        for models from anyone.

        Parameters
        ----------
        path : str or os.PathLike
            A path ending in ``.zip`` writes one zip file; anything else is a
            directory (created if needed). A model already there is replaced
            so that ``path`` holds the old model or the new one at every
            instant, even if the write fails or is killed; other files in
            the directory are left alone.
        metadata : dict, default=None
            Yours to record (dataset, metrics, git commit): JSON data only.
            :func:`~sklears_neural.core.persistence.read_info` returns it.

        Raises
        ------
        TypeError
            If the class is not registered, ``metadata`` is not JSON data, or a
            fitted attribute has a type the format cannot hold.

        Warns
        -----
        PersistenceWarning
            For each parameter JSON cannot hold (callback objects, a
            ``RandomState``): it is saved as ``None``; set it again after
            loading.
        """
        save_estimator(self, path, metadata=metadata)

    def get_config(self):
        """The estimator's class and parameters as JSON-able data.

        ``from_config(est.get_config())`` builds an unfitted estimator with
        the same parameters, like ``clone``; the dict dumps to JSON or YAML.

        Returns
        -------
        config : dict
            ``{"class": str, "params": dict}``. Tuples, non-finite floats and
            dicts with non-string keys are tagged (``{"__tuple__": [...]}``).

        Warns
        -----
        PersistenceWarning
            For each parameter recorded as ``None`` because JSON cannot hold it.
        """
        return estimator_config(self, stacklevel=3)
