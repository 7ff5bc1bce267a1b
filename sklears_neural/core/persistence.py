"""Two ways to persist an estimator: pickle, and ``save``/``load``.

Pickle (and joblib) for scikit-learn users: a pickled estimator holds numpy
arrays, never torch tensors or devices. Each network is stored as its
:class:`~sklears_neural.core.layers.ModuleSpec` plus a ``state_dict`` of
arrays, each optimizer as its state of arrays, the generator as its byte
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

Networks
--------
Which attributes hold networks, and which optimizer steps each, a family
declares once, in the class attribute ``_networks`` (see
:func:`declared_networks`); pickling, ``save``/``load``, the rollback of a
failed fit and checkpoints (exact resume) all read it. The base class
declares the one network every family has::

    _networks = {
        "module_": {"spec": "_module_spec_", "optimizer": "_optimizer",
                    "solver": "_optimizer_solver", "takes_input": True},
    }

and a family with more adds entries, e.g. a target network updated by a
callback and a critic with an optimizer of its own::

    _networks = {
        **BaseNeuralEstimator._networks,
        "target_": {"spec": "_module_spec_"},
        "critic_": {"spec": "_critic_spec_", "optimizer": "_critic_optimizer"},
    }

A network that ``_forward`` runs on X (``"takes_input": True``) is checked at
load against the input kind's sample shape (:func:`example_inputs`): rows of
``n_features_in_`` values, images of ``input_shape_``, sequences of steps of
``n_features_in_`` features. A torch module or optimizer in an attribute the
declaration does not name cannot be saved, and a file that holds one is
refused.
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
from sklears_neural.core.inputs import step_features
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
    "declared_networks",
    "declared_optimizers",
    "example_inputs",
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


# -- the networks a family declares ---------------------------------------------

#: What a ``_networks`` entry may say, and the value of each key it leaves out.
_NETWORK_DEFAULTS = {"optimizer": None, "solver": None, "takes_input": False}


def _declaration_error(owner, message):
    return TypeError(
        f"{owner}._networks is malformed: {message}. Declare each network as "
        '{"attribute_": {"spec": "_attribute_spec_", "optimizer": "_optimizer_attr" '
        'or None, "solver": "_solver_attr" or None, "takes_input": bool}} '
        '(only "spec" is required).'
    )


def declared_networks(estimator):
    """The networks an estimator class declares in ``_networks``, checked.

    ``_networks`` maps each attribute that holds a fitted network to a dict
    of plain values:

    ``"spec"`` : str, required
        The attribute holding the network's
        :class:`~sklears_neural.core.layers.ModuleSpec`, from which pickling
        and loading rebuild it. Networks of the same architecture may share
        one (a target copy of ``module_`` names ``"_module_spec_"``).
    ``"optimizer"`` : str or None, default=None
        The attribute holding the ``torch.optim.Optimizer`` that steps this
        network's parameters (all those with ``requires_grad``, in
        ``parameters()`` order, as :func:`~sklears_neural.core.optim.make_optimizer`
        takes them). None for a network not trained by gradient steps: a
        target copy, an EMA, a frozen teacher. Its state is kept by pickling,
        ``save``, rollback and checkpoints.
    ``"solver"`` : str or None, default=None
        The attribute holding the ``solver`` option that optimizer was built
        with, from which it is rebuilt; None (or the attribute unset): the
        ``solver`` parameter.
    ``"takes_input"`` : bool, default=False
        ``_forward`` runs this network on batches of X, and it gives
        ``n_outputs_`` outputs per sample: loading checks both with an
        example batch (:func:`example_inputs`) and refuses a file whose
        ``n_features_in_`` / ``input_shape_`` / ``n_outputs_`` the weights
        do not fit.

    Parameters
    ----------
    estimator : estimator or estimator class
        A class without ``_networks`` declares none (``BernoulliRBM``).

    Returns
    -------
    dict of str to dict
        ``{attribute: entry}`` with every key of the entry filled in.

    Raises
    ------
    TypeError
        If the declaration is malformed (the message names the entry), or
        two networks name the same optimizer.
    """
    cls = estimator if isinstance(estimator, type) else type(estimator)
    declared = getattr(cls, "_networks", None) or {}
    owner = cls.__name__
    if not isinstance(declared, dict):
        raise _declaration_error(owner, f"it is a {type(declared).__name__}, not a dict")
    networks, stepped_by = {}, {}
    for name, entry in declared.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise _declaration_error(owner, f"the network attribute {name!r} is not a name")
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str):
            raise _declaration_error(owner, f"the entry of {name!r} has no 'spec' name")
        unknown = sorted(set(entry) - {"spec", *_NETWORK_DEFAULTS})
        if unknown:
            raise _declaration_error(owner, f"the entry of {name!r} has unknown keys {unknown}")
        entry = {**_NETWORK_DEFAULTS, **entry}
        for key in ("optimizer", "solver"):
            if entry[key] is not None and not isinstance(entry[key], str):
                raise _declaration_error(
                    owner, f"the {key!r} of {name!r} is {entry[key]!r}, not a name or None"
                )
        if not isinstance(entry["takes_input"], bool):
            raise _declaration_error(owner, f"the 'takes_input' of {name!r} is not a bool")
        optimizer = entry["optimizer"]
        if optimizer is not None:
            if optimizer in declared:
                raise _declaration_error(
                    owner, f"the optimizer {optimizer!r} of {name!r} is also a network"
                )
            if optimizer in stepped_by:
                raise _declaration_error(
                    owner, f"{name!r} and {stepped_by[optimizer]!r} name the same "
                    f"optimizer {optimizer!r}; each optimizer steps one network"
                )
            stepped_by[optimizer] = name
        networks[name] = entry
    return networks


def declared_optimizers(estimator):
    """``{optimizer attribute: (network attribute, solver attribute or None)}``.

    Read from ``_networks`` (see :func:`declared_networks`).
    """
    return {
        entry["optimizer"]: (name, entry["solver"])
        for name, entry in declared_networks(estimator).items()
        if entry["optimizer"] is not None
    }


def _input_layout(estimator):
    kind = estimator._input_kind() if hasattr(estimator, "_input_kind") else None
    return kind, getattr(kind, "layout", None)


def example_inputs(estimator, *, n_samples=1, n_steps=1, dtype=torch.float32,
                   device="cpu"):
    """A batch of zeros shaped as the family's ``_forward`` receives one.

    Built from the fitted input attributes alone, for the input kind
    ``estimator._input_kind()``: a kind with an ``example_inputs(estimator,
    *, n_samples, n_steps, dtype, device)`` method is asked; otherwise the
    kinds of :mod:`sklears_neural.core.inputs` (and their subclasses) get,
    by their ``layout``:

    ``"tabular"``
        ``X`` of shape (n_samples, n_features_in_).
    ``"image"``
        ``X`` of shape (n_samples, *input_shape_).
    ``"sequence"``
        ``(X, lengths)``: X of shape (n_samples, n_steps, n_features_in_)
        and ``lengths`` int64 on the CPU, all ``n_steps``, as
        :class:`~sklears_neural.core.data.SequenceData` batches them.

    On the meta device it costs no memory: loading probes networks with it.

    Parameters
    ----------
    estimator : fitted BaseNeuralEstimator
        Or one whose ``n_features_in_`` (and ``input_shape_``) are set.
    n_samples : int, default=1
    n_steps : int, default=1
        Steps per sequence (sequence inputs only).
    dtype : torch.dtype, default=torch.float32
    device : str or torch.device, default="cpu"

    Returns
    -------
    torch.Tensor or tuple of torch.Tensor, or None
        None for another kind without ``example_inputs`` (its networks are
        then not probed at load).

    Raises
    ------
    ValueError
        If ``n_features_in_`` or ``input_shape_`` is missing or malformed.
    """
    from sklears_neural.core.inputs import ArrayInput, SequenceInput, TabularInput

    kind, layout = _input_layout(estimator)
    own = getattr(kind, "example_inputs", None)
    if own is not None:
        return own(estimator, n_samples=n_samples, n_steps=n_steps, dtype=dtype,
                   device=device)
    # A family's own kind may share a layout name (for augmentation) and batch
    # other inputs (tokens): only the core's kinds are known to batch these.
    if not isinstance(kind, (TabularInput, ArrayInput, SequenceInput)):
        return None
    state = vars(estimator)
    n_features = state.get("n_features_in_")
    if type(n_features) is not int or n_features < 1:
        raise ValueError(f"n_features_in_ is {n_features!r:.50}, not an int >= 1.")
    if layout == "sequence":
        n_features = step_features(estimator)
        if type(n_features) is not int or n_features < 1:
            raise ValueError(
                f"n_step_features_ is {n_features!r:.50}, not an int >= 1."
            )
    if layout == "tabular":
        return torch.zeros(n_samples, n_features, dtype=dtype, device=device)
    if layout == "sequence":
        return (
            torch.zeros(n_samples, n_steps, n_features, dtype=dtype, device=device),
            torch.full((n_samples,), n_steps, dtype=torch.int64),
        )
    shape = state.get("input_shape_")
    if (
        not isinstance(shape, (tuple, list))
        or not shape
        or not all(type(d) is int and d >= 1 for d in shape)
        or int(np.prod(shape)) != n_features
    ):
        raise ValueError(
            f"input_shape_ is {shape!r:.80}, not the shape of one sample holding "
            f"n_features_in_={n_features} values."
        )
    return torch.zeros(n_samples, *shape, dtype=dtype, device=device)


# -- pickle ------------------------------------------------------------------------


class PicklableStateMixin:
    """``__getstate__``/``__setstate__`` that turn torch state into numpy.

    Every network the class declares in ``_networks`` is pickled as the
    arrays of its ``state_dict`` and rebuilt from its spec; every declared
    optimizer as the arrays of its state, rebuilt around its network. A
    network whose spec attribute is None is pickled as the module object.
    """

    def __getstate__(self):
        # object.__getstate__ returns the live __dict__: copy before editing.
        state = dict(super().__getstate__())
        for name, entry in declared_networks(self).items():
            module = state.get(name)
            if isinstance(module, torch.nn.Module) and state.get(entry["spec"]) is not None:
                state[name] = to_numpy_tree(module.state_dict())
            optimizer = state.get(entry["optimizer"]) if entry["optimizer"] else None
            if isinstance(optimizer, torch.optim.Optimizer):
                state[entry["optimizer"]] = to_numpy_tree(optimizer.state_dict())
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
        networks = declared_networks(self)
        # Arrays (a dict) where __getstate__ replaced a module or an optimizer.
        module_states = {
            name: state.pop(name) for name in networks if isinstance(state.get(name), dict)
        }
        optimizer_states = {
            name: state.pop(name) for name in declared_optimizers(self)
            if isinstance(state.get(name), dict)
        }
        generator_state = state.pop("_generator", None)
        super().__setstate__(state)
        if generator_state is not None:
            self._generator = torch.Generator()
            self._generator.set_state(torch.from_numpy(generator_state))
        if self.__dict__.get("_stopping") is not None and self._stopping.best_state:
            self._stopping.best_state = to_torch_tree(self._stopping.best_state)
        if not module_states and not optimizer_states:
            return
        from sklears_neural.core.noise import set_generator
        from sklears_neural.core.optim import make_optimizer

        device = _loading_device(self.device)
        for name, module_state in module_states.items():
            module = getattr(self, networks[name]["spec"]).build()
            # assign=True keeps the saved dtype (float32 or float64 training).
            module.load_state_dict(to_torch_tree(module_state), assign=True)
            module = module.to(device)
            set_generator(module, self.__dict__.get("_generator"))
            setattr(self, name, module)
        for name, optimizer_state in optimizer_states.items():
            network, solver = declared_optimizers(self)[name]
            optimizer = make_optimizer(
                getattr(self, network), _SolverView(self.__dict__, solver)
            )
            optimizer.load_state_dict(to_torch_tree(optimizer_state))
            setattr(self, name, optimizer)


class _SolverView:
    """The estimator settings an optimizer was built from, read from a state dict.

    The optimizer is rebuilt with the solver it was trained with (the value
    of the attribute ``solver_attribute``), which may differ from the
    current ``solver`` parameter after ``set_params``.
    """

    def __init__(self, state, solver_attribute="_optimizer_solver"):
        self.__dict__.update(state)
        solver = state.get(solver_attribute) if solver_attribute else None
        self.solver = state["solver"] if solver is None else solver


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
    # module_ -> "module.<key>"; another network keeps its own name as prefix.
    return "module" if name == "module_" else name.strip("_")


def _encode_attribute(estimator, name, value, encoder):
    owner = type(estimator).__name__
    if isinstance(value, torch.nn.Module):
        networks = declared_networks(estimator)
        if name not in networks:
            raise TypeError(
                f"Cannot save {owner}: its attribute {name!r} holds a torch module "
                f"that {owner}._networks does not declare. Declare it there (with "
                "the attribute holding its ModuleSpec), so that loading can rebuild it."
            )
        spec_name = networks[name]["spec"]
        spec = getattr(estimator, spec_name, None)
        if spec is None:
            raise TypeError(
                f"Cannot save {owner}: its module {name!r} has no "
                f"ModuleSpec in {spec_name!r}, so it could not be rebuilt."
            )
        return encoder.encode_module(value, spec, (_module_root(name),))
    if isinstance(value, torch.optim.Optimizer):
        if name not in declared_optimizers(estimator):
            raise TypeError(
                f"Cannot save {owner}: its attribute {name!r} holds a torch optimizer "
                f"that {owner}._networks does not declare as the optimizer of a "
                "network. Declare it there, so that loading can rebuild it around "
                "that network."
            )
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


def _check_fitted_together(estimator, attrs, where):
    """Attributes ``fit`` sets together are all there, and agree.

    A network that takes X needs the width ``predict`` checks ``X`` against,
    and a classifier's labels must be those its outputs stand for: one
    output per class (multiclass, multilabel) or one for both (binary).
    """
    for name, entry in declared_networks(estimator).items():
        if (
            entry["takes_input"]
            and isinstance(attrs.get(name), torch.nn.Module)
            and "n_features_in_" not in attrs
        ):
            raise ModelFileError(
                f"{where}: the fitted state has a network ({name}) but no "
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


#: Most values of the example batch that the widths check runs through the
#: loaded network itself, where the meta device cannot run it (a layer that
#: reads its input's values, as packing sequences reads their lengths); or
#: as many as the saved weights hold, if more: an honest network holds at
#: least one weight per input feature, or takes any size (convolutions,
#: which run on the meta device).
_PROBE_VALUES = 2**20


def _numel(inputs):
    if isinstance(inputs, torch.Tensor):
        return inputs.numel()
    return sum(_numel(part) for part in inputs)


def _expected_inputs(estimator, layout):
    """What the fitted input attributes say the network takes, in words."""
    state = vars(estimator)
    n = state.get("n_features_in_")
    if layout == "image":
        shape = state.get("input_shape_")
        return f"input_shape_ is {shape}", f"samples of shape {shape}"
    if layout == "sequence":
        n = step_features(estimator)
        return f"n_step_features_ is {n}", f"sequences of {n} features per step"
    if layout == "tabular":
        return f"n_features_in_ is {n}", f"rows of {n} values"
    return f"n_features_in_ is {n}", "the inputs its input kind describes"


def _check_outputs(out, n_outputs, net, where):
    if n_outputs is None or not isinstance(out, torch.Tensor):
        return
    shape = tuple(out.shape)
    if len(shape) == 2:
        fits = shape == (1, n_outputs)
    elif len(shape) < 2:
        fits = shape == (1,) and n_outputs == 1
    else:
        # Per-step or per-pixel outputs: n_outputs_ along one axis, or in all.
        fits = shape[0] == 1 and n_outputs in (
            shape[1], shape[-1], int(np.prod(shape[1:]))
        )
    if not fits:
        raise ModelFileError(
            f"{where}: n_outputs_ is {n_outputs}, but the saved {net} gives rows of "
            f"{shape[1:]} values. The file was edited."
        )


def _check_widths(estimator, meta, module, n_saved_values, where):
    """The network takes what ``predict`` will give it, and gives ``n_outputs_``.

    ``predict`` checks ``X`` against ``n_features_in_`` (images against
    ``input_shape_``): a value the weights do not take would load and fail
    there. One sample of zeros (:func:`example_inputs`) through the family's
    ``_forward`` on the meta device tells, for most modules, with no memory
    and no arithmetic. A module the meta device cannot run (packed
    sequences) runs the zeros for real instead, in evaluation mode, its
    training flags restored afterwards.

    Parameters
    ----------
    estimator : estimator
        With the file's fitted attributes set.
    meta : torch.nn.Module
        The network built on the meta device.
    module : torch.nn.Module
        The same network, loaded.
    n_saved_values : int
        Values the saved weights hold.
    where : str
    """
    _, layout = _input_layout(estimator)
    net = type(meta).__name__
    dtype = next(
        (t.dtype for t in meta.state_dict().values() if t.is_floating_point()),
        torch.float32,
    )
    try:
        example = example_inputs(estimator, dtype=dtype, device="meta")
    except ValueError as exc:
        raise ModelFileError(f"{where}: {exc} The file was edited.") from None
    if example is None:
        return
    attribute, takes = _expected_inputs(estimator, layout)

    def mismatch(exc):
        return ModelFileError(
            f"{where}: {attribute}, but the saved {net} does not take {takes} "
            f"({exc}). The file was edited."
        )

    try:
        with torch.no_grad():
            out = estimator._forward(meta.eval(), example)
    except Exception as meta_exc:  # whatever the layer says: the widths may disagree
        if _numel(example) > max(_PROBE_VALUES, n_saved_values):
            raise mismatch(meta_exc) from None
        device = next(
            (t.device for t in module.state_dict().values()), torch.device("cpu")
        )
        example = example_inputs(estimator, dtype=dtype, device=device)
        flags = [(m, m.training) for m in module.modules()]
        try:
            module.eval()
            with torch.no_grad():
                out = estimator._forward(module, example)
        except Exception as exc:  # the real layer refuses the widths
            raise mismatch(exc) from None
        finally:
            for m, training in flags:
                m.training = training
    _check_outputs(out, vars(estimator).get("n_outputs_"), net, where)


def _build_module(pending, device, where):
    """``(meta, module)``: the network checked on the meta device, then built."""
    meta = _check_module_tensors(pending.spec, pending.state, where)
    module = pending.spec.build()
    # assign=True keeps the saved dtype (float32 or float64 training).
    module.load_state_dict(pending.state, assign=True)
    return meta, module.to(device)


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


def _build_optimizer(pending, estimator, attrs, network, solver, where):
    """The optimizer of ``attrs[network]``, rebuilt with its solver, state checked."""
    from sklears_neural.core.optim import make_optimizer

    module = attrs.get(network)
    if not isinstance(module, torch.nn.Module):
        raise ModelFileError(
            f"{where}: optimizer state without its network ({network})."
        )
    try:
        optimizer = make_optimizer(
            module, _SolverView({**vars(estimator), **attrs}, solver)
        )
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
    never an import path), parameter values, networks and optimizers only in
    the attributes the class declares (``_networks``, see
    :func:`declared_networks`), every tensor's shape and dtype against the
    rebuilt network and its spec attribute, each optimizer's state and
    settings against the rebuilt optimizer, and the fitted state: counts
    (``n_*_``, ``t_``) are ints >= 0, a network that takes X takes samples
    of what ``n_features_in_`` (and ``input_shape_``) say and gives
    ``n_outputs_`` outputs. Nothing half-loaded is returned.

    Parameters
    ----------
    path : str or os.PathLike
        A directory, or a ``.zip`` file.

    Returns
    -------
    estimator
        A new estimator, fitted if the saved one was: it predicts exactly
        as the saved one and continues ``partial_fit``/``warm_start`` with
        the state of every optimizer and its random generator. The networks
        go to the estimator's ``device`` when this machine has it, else to
        the CPU.

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
    networks = declared_networks(estimator)
    optimizers = declared_optimizers(estimator)
    _check_declared(type(estimator), attrs, networks, optimizers, where)
    device = _loading_device(getattr(estimator, "device", "cpu"))
    built = {}
    for name, value in attrs.items():
        if isinstance(value, PendingModule):
            meta, attrs[name] = _build_module(value, device, where)
            spec_name = networks[name]["spec"]
            if attrs.get(spec_name) != value.spec:
                # Fit, warm_start and pickling read the spec attribute: it must
                # describe the network the weights were saved with.
                raise ModelFileError(
                    f"{where}: the network {name} was saved with another "
                    f"architecture than {spec_name} describes. The file was edited."
                )
            built[name] = (meta, sum(t.numel() for t in value.state.values()))
            if isinstance(attrs.get("_generator"), torch.Generator):
                from sklears_neural.core.noise import set_generator

                # Dropout and noise masks draw from the fit's generator, as
                # after fit and after unpickling.
                set_generator(attrs[name], attrs["_generator"])
    # Nothing half-loaded is returned: the estimator is dropped on any error.
    estimator.__dict__.update(attrs)
    for name, (meta, n_values) in built.items():
        if networks[name]["takes_input"] and "n_features_in_" in attrs:
            _check_widths(estimator, meta, attrs[name], n_values, where)
    _check_fitted_together(estimator, attrs, where)  # after the widths, which say more
    for name, value in attrs.items():
        if isinstance(value, PendingOptimizer):
            network, solver = optimizers[name]
            attrs[name] = _build_optimizer(value, estimator, attrs, network, solver, where)
    estimator.__dict__.update(attrs)
    return estimator


def _check_declared(cls, attrs, networks, optimizers, where):
    """Networks and optimizers sit where the class declares them, nowhere else."""
    owner = cls.__name__
    for name, value in attrs.items():
        if isinstance(value, PendingModule):
            if name not in networks:
                raise ModelFileError(
                    f"{where}: the fitted state holds a network in {name!r}, which "
                    f"{owner} does not declare in _networks. The file was edited."
                )
        elif isinstance(value, PendingOptimizer):
            if name not in optimizers:
                raise ModelFileError(
                    f"{where}: the fitted state holds an optimizer in {name!r}, which "
                    f"{owner} does not declare in _networks. The file was edited."
                )
        elif value is not None and (name in networks or name in optimizers):
            what = "network" if name in networks else "optimizer"
            raise ModelFileError(
                f"{where}: {name} is {type(value).__name__}, where {owner} keeps a "
                f"{what} (or None). The file was edited."
            )


class SaveLoadMixin:
    """``save`` and ``get_config`` for every estimator; :func:`load` reads back."""

    def save(self, path, *, metadata=None):
        """Save the estimator to a directory or a ``.zip`` file, without pickle.

        Writes ``config.json`` (class, parameters, fitted attributes,
        versions, creation time, ``metadata``, the name, size and SHA-256 of
        the weights) and a safetensors file (the weights of every network
        the class declares in ``_networks``, the state of their optimizers,
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
            If the class is not registered, ``metadata`` is not JSON data, a
            fitted attribute has a type the format cannot hold, or holds a
            torch module or optimizer that ``_networks`` does not declare.

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
