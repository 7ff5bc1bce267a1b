"""The saved-model format: JSON for structure, safetensors for arrays, no code.

A saved model is a directory, or a ``.zip`` file, holding two entries:

- ``config.json``: the estimator's class name and parameters, its fitted
  state as tagged JSON (below), versions, the creation time, the user's
  metadata, and the weights file's name, size and SHA-256;
- the weights, a safetensors file: every numeric array and tensor of the
  fitted state (the weights of each network the class declares in
  ``_networks`` under its attribute's name, ``module.`` for ``module_``;
  each optimizer's state likewise, ``optimizer.`` for ``_optimizer``; other
  arrays under ``attrs.``). In a zip it is
  ``model.safetensors``; in a directory ``model-<hash>.safetensors``, named
  by the first 16 hex digits of its SHA-256, so that overwriting a saved
  model switches from the old files to the new ones with one rename (see
  :func:`write_archive`).

Reading refuses, before reading it, a ``config.json`` larger than
:data:`MAX_CONFIG_BYTES`, weights larger than ``config.json`` records, a zip
entry that inflates more than :data:`MAX_INFLATION` times, is encrypted or
uses another compression than deflate, and an entry that is not a regular
file (see :class:`ArchiveReader`).

Values JSON cannot say directly are written as one-key objects, "tags":
``{"__tuple__": [...]}``, ``{"__float__": "inf"}``, ``{"__items__": [[k, v], ...]}``
(a dict with non-string keys), ``{"__ndarray__": {...}}`` (strings or
objects, with the dtype), ``{"__tensor__": {...}}`` (a reference into the
safetensors file), ``{"__history__": [...]}``, ``{"__spec__": {...}}``,
``{"__generator__": {...}}``, ``{"__device__": "cuda:0"}``,
``{"__object__": {...}}`` (a plain-data object of a fixed, known class),
``{"__optimizer__": {...}}``, ``{"__module__": {...}}`` and ``{"__dict__": {...}}``
(a dict whose only key looks like a tag). Decoding a tag never imports a
module or calls code named by the file: every class comes from a fixed table
here or from :mod:`sklears_neural.core.registry`.

``FORMAT_VERSION`` numbers the layout. ``MIGRATIONS[k]`` turns a version-``k``
config dict into a version-``k + 1`` one; :func:`migrate` applies them in order.
"""

import copy
import hashlib
import json
import math
import os
import re
import secrets
import stat
import time
import warnings
import zipfile
import zlib

import numpy as np
import torch

from sklears_neural._version import __version__
from sklears_neural.core import registry
from sklears_neural.exceptions import ModelFileError, PersistenceWarning

__all__ = [
    "FORMAT_VERSION",
    "MIGRATIONS",
    "migrate",
    "encode_params",
    "decode_params",
    "StateEncoder",
    "StateDecoder",
    "UnsupportedValue",
    "ArchiveReader",
    "MAX_CONFIG_BYTES",
    "MAX_INFLATION",
    "STALE_TEMP_SECONDS",
    "write_archive",
    "parse_config",
    "check_attribute_name",
]

FORMAT_VERSION = 1

#: ``{k: function(config) -> config}``, each taking a config dict written in
#: format ``k`` to format ``k + 1``. Format 1 is the first: nothing to migrate yet.
MIGRATIONS = {}

FORMAT_NAME = "sklears-neural"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Tags that stand for a whole attribute (built by the loader, in context).
_ATTRIBUTE_TAGS = frozenset({"__module__", "__optimizer__"})
# numpy kinds kept in the safetensors file (bool, signed, unsigned, float).
_NUMERIC_KINDS = "biuf"
# numpy kinds written to JSON inside an "__ndarray__" tag.
_JSON_KINDS = "biufUO"


class UnsupportedValue(Exception):
    """A value the format cannot hold; carries where it was found.

    Internal to the core: callers turn it into a warning or a ``TypeError``.
    """

    def __init__(self, path, value):
        super().__init__(path, value)
        self.path = path
        self.value = value

    def describe(self):
        kind = type(self.value)
        return f"{kind.__module__}.{kind.__qualname__}"


def _library_types():
    # Imported on use: sklears_neural.exceptions re-exports this module's
    # errors, and the layers import modules that import the exceptions.
    from sklears_neural.core.history import History
    from sklears_neural.core.layers import ModuleSpec

    return History, ModuleSpec


def _plain_classes():
    """Classes restored from a dict of plain data; never looked up elsewhere."""
    from sklearn.preprocessing import LabelBinarizer

    from sklears_neural.core.callbacks import EarlyStopping
    from sklears_neural.core.schedules import LRScheduler

    return {
        "LabelBinarizer": LabelBinarizer,
        "EarlyStopping": EarlyStopping,
        "LRScheduler": LRScheduler,
    }


def check_attribute_name(cls, name, where):
    """Data only: no dunders, nothing hiding a method or property of ``cls``."""
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or name.startswith("__")
        or hasattr(cls, name)
    ):
        raise ModelFileError(
            f"{where} holds an attribute named {name!r:.100}, which a {cls.__name__} "
            "cannot have. The file was edited or is not a sklears-neural model."
        )


# -- encoding -----------------------------------------------------------------


class StateEncoder:
    """Turn Python/numpy/torch values into tagged JSON plus a dict of tensors.

    Parameters
    ----------
    tensors : bool, default=True
        Keep numeric arrays and tensors in :attr:`tensors` (for a saved
        model). ``False`` writes arrays as JSON and refuses tensors (for a
        config of parameters).

    Attributes
    ----------
    tensors : dict of str to torch.Tensor
        Contiguous CPU copies, keyed by their dotted path in the state.
    """

    def __init__(self, *, tensors=True):
        self.tensors = {} if tensors else None

    def encode(self, value, path):
        """Tagged JSON for ``value``; ``path`` is a tuple naming where it sits.

        Raises
        ------
        UnsupportedValue
            If ``value`` (or something inside it) has no representation.
        """
        History, ModuleSpec = _library_types()
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            value = float(value)
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, History):
            return {"__history__": self._encode_items(value, path)}
        if type(value) is tuple:
            return {"__tuple__": self._encode_items(value, path)}
        if type(value) is list:
            return self._encode_items(value, path)
        if type(value) is dict:
            return self._encode_dict(value, path)
        if isinstance(value, np.ndarray):
            return self._encode_array(value, path)
        if isinstance(value, torch.Tensor):
            return self._tensor_ref(value.detach(), path, "torch")
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        if isinstance(value, torch.Generator):
            return {"__generator__": {
                "device": str(value.device),
                "state": self._tensor_ref(value.get_state(), path, "torch"),
            }}
        if isinstance(value, ModuleSpec):
            return {"__spec__": {
                "class": registry.module_name(value.module_class),
                "kwargs": self.encode(value.kwargs, (*path, "kwargs")),
            }}
        if isinstance(value, torch.optim.Optimizer):
            return {"__optimizer__": {
                "class": type(value).__name__,
                "state_dict": self.encode(value.state_dict(), path),
            }}
        plain = _plain_classes()
        if plain.get(type(value).__name__) is type(value):
            # __getstate__ is what pickling would keep: LRScheduler drops its
            # bound optimizer there and keeps its progress as plain data.
            return {"__object__": {
                "class": type(value).__name__,
                "state": self._encode_dict(dict(value.__getstate__()), path),
            }}
        raise UnsupportedValue(path, value)

    def encode_module(self, module, spec, path):
        """A module as its spec plus its ``state_dict`` (tensors under ``path``)."""
        return {"__module__": {
            "spec": self.encode(spec, path),
            "state": self._encode_dict(dict(module.state_dict()), path),
        }}

    def _encode_items(self, values, path):
        return [self.encode(v, (*path, i)) for i, v in enumerate(values)]

    def _encode_dict(self, value, path):
        if all(isinstance(k, str) for k in value):
            encoded = {k: self.encode(v, (*path, k)) for k, v in value.items()}
            if any(k.startswith("__") and k.endswith("__") for k in value):
                return {"__dict__": encoded}
            return encoded
        return {"__items__": [
            [self.encode(k, (*path, "key")), self.encode(v, (*path, str(k)))]
            for k, v in value.items()
        ]}

    def _encode_array(self, array, path):
        kind = array.dtype.kind
        if self.tensors is not None and kind in _NUMERIC_KINDS:
            try:
                tensor = torch.from_numpy(array.copy(order="C"))
            except (TypeError, ValueError):
                # A dtype torch cannot hold (float128, a non-native byte order): JSON.
                pass
            else:
                return self._tensor_ref(tensor, path, "numpy")
        if kind not in _JSON_KINDS or array.dtype.byteorder == ">":
            raise UnsupportedValue(path, array)
        if kind == "O":
            items = array.ravel().tolist()
            scalars = (bool, int, float, str, type(None))
            if not all(isinstance(v, scalars) for v in items):
                raise UnsupportedValue(path, array)
            data = [self.encode(v, path) for v in items]
        else:
            data = [self.encode(v, path) for v in array.ravel().tolist()]
        return {"__ndarray__": {
            "dtype": array.dtype.str, "shape": list(array.shape), "data": data,
        }}

    def _tensor_ref(self, tensor, path, kind):
        if self.tensors is None:
            raise UnsupportedValue(path, tensor)
        key = ".".join(str(p) for p in path)
        base, n = key, 1
        while key in self.tensors:
            key, n = f"{base}#{n}", n + 1
        # A private contiguous copy: safetensors refuses tensors sharing memory.
        self.tensors[key] = tensor.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": {"key": key, "as": kind}}


def encode_params(params, *, owner, stacklevel=2):
    """Parameters as tagged JSON; a value JSON cannot hold becomes ``None``.

    Parameters
    ----------
    params : dict
        ``estimator.get_params(deep=False)``.
    owner : str
        The estimator's class name, for the warning.
    stacklevel : int, default=2
        Of the warning: 2 names the caller of this function.

    Returns
    -------
    dict

    Warns
    -----
    PersistenceWarning
        For each parameter recorded as ``None`` (callback objects, a
        ``RandomState``...), naming it.
    """
    encoder = StateEncoder(tensors=False)
    encoded = {}
    for name, value in params.items():
        try:
            encoded[name] = encoder.encode(value, (name,))
        except UnsupportedValue as exc:
            warnings.warn(
                f"The {name!r} parameter of {owner} holds a {exc.describe()}, which a "
                f"JSON config cannot hold: it is recorded as null, so the loaded "
                f"estimator has {name}=None. Set it again after loading with "
                f"set_params({name}=...).",
                PersistenceWarning,
                stacklevel=stacklevel,
            )
            encoded[name] = None
    return encoded


# -- decoding -----------------------------------------------------------------


class PendingModule:
    """A decoded ``__module__`` tag: built by the loader once the device is known."""

    def __init__(self, spec, state):
        self.spec = spec
        self.state = state


class PendingOptimizer:
    """A decoded ``__optimizer__`` tag: built by the loader around the module."""

    def __init__(self, class_name, state_dict):
        self.class_name = class_name
        self.state_dict = state_dict


class StateDecoder:
    """Inverse of :class:`StateEncoder`.

    Parameters
    ----------
    tensors : dict of str to torch.Tensor or None
        The safetensors file's contents; ``None`` for a config of
        parameters, where a tensor reference is an error.
    where : str
        What is being read, for error messages ("model.zip").
    """

    def __init__(self, tensors=None, *, where="the config"):
        self.tensors = tensors
        self.where = where
        self.used = set()
        self._tags = {
            "__tuple__": self._tuple,
            "__float__": self._float,
            "__items__": self._items,
            "__dict__": self._dict,
            "__device__": self._device,
            "__history__": self._history,
            "__ndarray__": self._ndarray,
            "__tensor__": self._tensor,
            "__generator__": self._generator,
            "__spec__": self._spec,
            "__object__": self._object,
        }

    def error(self, message):
        return ModelFileError(f"{self.where}: {message}")

    def decode(self, value):
        """The Python value of tagged JSON ``value``."""
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            raise self.error(f"unexpected JSON value {value!r:.200}.")
        if len(value) == 1:
            (key, body), = value.items()
            if key in _ATTRIBUTE_TAGS:
                raise self.error(f"{key!r} is only allowed as a whole attribute.")
            if key in self._tags:
                return self._tags[key](body)
            if key.startswith("__") and key.endswith("__"):
                raise self.error(
                    f"unknown tag {key!r:.100}; the file may come from a newer "
                    "sklears-neural (upgrade it) or was edited."
                )
        return {k: self.decode(v) for k, v in value.items()}

    def decode_attribute(self, value):
        """Like :meth:`decode`, for a whole fitted attribute: a module or an
        optimizer is allowed here (as a pending object), nowhere deeper."""
        try:
            if isinstance(value, dict) and len(value) == 1:
                (key, body), = value.items()
                if key == "__module__":
                    return self._module(body)
                if key == "__optimizer__":
                    return self._optimizer(body)
            return self.decode(value)
        except RecursionError:
            raise self.error("values nested too deeply.") from None

    def _body(self, body, kind, keys=None):
        if not isinstance(body, kind) or (
            keys is not None and (not isinstance(body, dict) or set(body) != set(keys))
        ):
            raise self.error(f"malformed value {body!r:.200}.")
        return body

    def _tuple(self, body):
        return tuple(self.decode(v) for v in self._body(body, list))

    def _float(self, body):
        if body not in ("inf", "-inf", "nan"):
            raise self.error(f"malformed float {body!r:.200}.")
        return float(body)

    def _items(self, body):
        pairs = self._body(body, list)
        if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise self.error(f"malformed dict items {body!r:.200}.")
        try:
            return {self.decode(k): self.decode(v) for k, v in pairs}
        except TypeError:
            raise self.error("a dict key that is a list or a dict.") from None

    def _dict(self, body):
        return {k: self.decode(v) for k, v in self._body(body, dict).items()}

    def _device(self, body):
        try:
            return torch.device(self._body(body, str))
        except RuntimeError as exc:
            raise self.error(f"bad device {body!r:.100}: {exc}") from None

    def _history(self, body):
        History, _ = _library_types()
        records = [self.decode(v) for v in self._body(body, list)]
        if not all(isinstance(r, dict) and all(isinstance(k, str) for k in r)
                   for r in records):
            raise self.error("a history record that is not a dict keyed by str.")
        return History(records)

    def _ndarray(self, body):
        body = self._body(body, dict, ("dtype", "shape", "data"))
        shape = self._body(body["shape"], list)
        try:
            dtype = np.dtype(self._body(body["dtype"], str))
        except (TypeError, ValueError):
            raise self.error(f"bad array dtype in {body!r:.200}.") from None
        if not all(type(n) is int and n >= 0 for n in shape):
            raise self.error(f"array shape {shape!r:.100} is not a list of ints >= 0.")
        data = [self.decode(v) for v in self._body(body["data"], list)]
        if dtype.kind not in _JSON_KINDS or math.prod(shape) != len(data):
            raise self.error(f"array of dtype {dtype} and shape {tuple(shape)} holding "
                             f"{len(data)} values.")
        # The dtype sets the memory per value ("<U100000000": 400 MB a string):
        # no more than the config could spell out, at 4 bytes per character.
        if dtype.itemsize * len(data) > 4 * MAX_CONFIG_BYTES:
            raise self.error(f"array of {len(data)} values of dtype {dtype} would take "
                             f"{dtype.itemsize * len(data)} bytes.")
        if dtype.kind == "O":
            array = np.empty(len(data), dtype=object)
            array[:] = data
            return array.reshape(shape)
        try:
            return np.array(data, dtype=dtype).reshape(shape)
        except (TypeError, ValueError, OverflowError):
            raise self.error(f"values that do not fit dtype {dtype}.") from None

    def _tensor(self, body):
        body = self._body(body, dict, ("key", "as"))
        key = body["key"]
        if not isinstance(key, str) or body["as"] not in ("numpy", "torch"):
            raise self.error(f"malformed tensor reference {body!r:.200}.")
        if self.tensors is None:
            raise self.error("a tensor reference where only parameters are expected.")
        if key not in self.tensors:
            raise self.error(
                f"tensor {key!r:.100} is missing from the weights file (edited or "
                "truncated)."
            )
        if key in self.used:
            raise self.error(f"tensor {key!r:.100} is referenced twice.")
        self.used.add(key)
        tensor = self.tensors[key]
        if body["as"] == "torch":
            return tensor
        try:
            return tensor.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy does not have
            raise self.error(f"tensor {key!r:.100} of dtype {tensor.dtype} is "
                             "read as a numpy array, which cannot hold it.") from None

    def _generator(self, body):
        body = self._body(body, dict, ("device", "state"))
        device, state = body["device"], self.decode(body["state"])
        if not isinstance(device, str) or not isinstance(state, torch.Tensor) or (
            state.dtype != torch.uint8
        ):
            raise self.error(f"malformed generator {body!r:.200}.")
        if self._device(device).type != "cpu":
            # The (device, state) pair BernoulliRBM keeps for accelerator
            # generators: it makes the generator on first use.
            return device, state.numpy()
        generator = torch.Generator()
        try:
            generator.set_state(state)
        except (RuntimeError, TypeError):
            raise self.error("the random generator's state is corrupt.") from None
        return generator

    def _spec(self, body):
        _, ModuleSpec = _library_types()
        body = self._body(body, dict, ("class", "kwargs"))
        try:
            module_class = registry.module_class(body["class"])
        except ValueError as exc:
            raise self.error(str(exc)) from None
        kwargs = self.decode(body["kwargs"])
        if not isinstance(kwargs, dict):
            raise self.error(f"module arguments {kwargs!r:.200} are not a dict.")
        return ModuleSpec(module_class, kwargs)

    def _module(self, body):
        body = self._body(body, dict, ("spec", "state"))
        _, ModuleSpec = _library_types()
        spec, state = self.decode(body["spec"]), self.decode(body["state"])
        if not isinstance(spec, ModuleSpec) or not isinstance(state, dict) or not all(
            isinstance(t, torch.Tensor) for t in state.values()
        ):
            raise self.error("malformed module entry.")
        return PendingModule(spec, state)

    def _optimizer(self, body):
        body = self._body(body, dict, ("class", "state_dict"))
        state_dict = self.decode(body["state_dict"])
        if not isinstance(body["class"], str) or not isinstance(state_dict, dict):
            raise self.error("malformed optimizer entry.")
        return PendingOptimizer(body["class"], state_dict)

    def _object(self, body):
        body = self._body(body, dict, ("class", "state"))
        name = body["class"]
        cls = _plain_classes().get(name) if isinstance(name, str) else None
        if cls is None:
            raise self.error(
                f"unknown object class {name!r:.100}; known: "
                f"{', '.join(sorted(_plain_classes()))}."
            )
        state = self.decode(body["state"])
        if not isinstance(state, dict):
            raise self.error(f"malformed {cls.__name__} state.")
        obj = cls.__new__(cls)
        for name in state:
            check_attribute_name(cls, name, self.where)
        obj.__dict__.update(state)
        return obj

    def check_all_used(self):
        """Every tensor of the file was referenced: none was added by an edit."""
        extra = sorted(set(self.tensors or ()) - self.used)
        if extra:
            raise self.error(
                f"the weights file holds tensors the config does not describe: "
                f"{extra[:5]}. The file was edited."
            )


def decode_params(encoded, *, where="the config"):
    """Inverse of :func:`encode_params`.

    Raises
    ------
    ModelFileError
        If ``encoded`` is not a dict of tagged JSON values.
    """
    if not isinstance(encoded, dict) or not all(isinstance(k, str) for k in encoded):
        raise ModelFileError(
            f"{where}: 'params' must be a dict keyed by parameter name."
        )
    decoder = StateDecoder(where=where)
    try:
        return {name: decoder.decode(value) for name, value in encoded.items()}
    except RecursionError:
        raise decoder.error("values nested too deeply.") from None


# -- versions -----------------------------------------------------------------


def _release(version):
    """``"1.2.0rc1"`` -> ``(1, 2, 0)``: enough to tell older from newer."""
    parts = []
    for piece in str(version).split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def newer_library(version):
    """Whether ``version`` (read from a file) is newer than this library."""
    return _release(version) > _release(__version__)


def migrate(config, *, where="the file"):
    """Bring a config dict to :data:`FORMAT_VERSION` by :data:`MIGRATIONS`, in order.

    Parameters
    ----------
    config : dict
        Read from ``config.json``; not modified.
    where : str, default="the file"
        What is being read, for error messages.

    Returns
    -------
    dict

    Raises
    ------
    ModelFileError
        If the file's format is newer than this library reads (upgrade
        sklears-neural), or older than any migration reaches (load and save
        it again with the library version that wrote it).
    """
    version = config.get("format_version")
    written_by = config.get("library_version", "an unknown version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(
            f"{where}: 'format_version' must be an int >= 1, got {version!r:.100}."
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{where} uses format version {version} (written by sklears-neural "
            f"{written_by}), but this sklears-neural {__version__} reads format "
            f"versions up to {FORMAT_VERSION}. Upgrade sklears-neural "
            "(pip install --upgrade sklears-neural) to load it."
        )
    config = copy.deepcopy(config)
    while version < FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ModelFileError(
                f"{where} uses format version {version}, which this sklears-neural "
                f"{__version__} can no longer read. Load it with sklears-neural "
                f"{written_by} and save it again, or use that version."
            )
        config = step(config)
        version += 1
        config["format_version"] = version
    return config


# -- files ----------------------------------------------------------------------

#: The most bytes ``config.json`` may hold; :class:`ArchiveReader` refuses a
#: larger one before reading it. A config is small: a few KB for the class,
#: parameters and fitted scalars, about 200 bytes per epoch of history (~1.5 KB
#: with ``GradientStats`` on a 10-layer network) and ~25 per string label or
#: feature name. So 8 MiB holds some 40,000 plain epochs or 300,000 feature
#: names, while parsing the worst 8 MiB of JSON (``[{}, {}, ...]``) takes
#: about 200 MB of Python objects. Raise it for a file you trust.
MAX_CONFIG_BYTES = 8 * 2**20

#: The most a deflated zip entry may expand, as a multiple of its compressed
#: size: the ratio Apache POI's zip-bomb guard uses by default. Saved weights
#: are stored uncompressed (ratio 1) and a config deflates about 5 times;
#: deflating zeros or blanks reaches about 1,000.
MAX_INFLATION = 100

#: Seconds after which a temporary file of a save, not written since, is taken
#: for the leftover of a killed write and removed by the next save to the same
#: target. Far longer than writing and syncing any model takes, so the file of
#: a write still running in another process is never removed.
STALE_TEMP_SECONDS = 3600

# The weights file names save writes: model.safetensors in a zip; in a
# directory, model-<first 16 hex digits of their SHA-256>.safetensors, so that
# a new save never writes over the file the current config.json names.
_WEIGHTS_FILE = re.compile(r"model(-[0-9a-f]{16})?\.safetensors")


def _is_zip_path(path):
    return os.fspath(path).lower().endswith(".zip")


def _temp_pattern(names):
    # Temporary files are ".tmp-<final name>-<8 hex digits>.part": a pattern
    # no other program's files match by chance.
    return re.compile(rf"\.tmp-(?:{names})-[0-9a-f]{{8}}\.part")


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        # Already gone, or open elsewhere (Windows): a later save retries.
        pass


def _remove_stale_temps(folder, pattern):
    cutoff = time.time() - STALE_TEMP_SECONDS
    for entry in os.scandir(folder):
        try:
            if (pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                _remove(entry.path)
        except OSError:
            continue


def _sync_folder(folder):
    # Makes the renames in ``folder`` durable (POSIX); Windows cannot open a
    # folder, and some file systems refuse to sync one: best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(folder, name, data):
    """Write ``folder/name`` whole or not at all: a synced temporary file, renamed.

    ``data`` is bytes, or a function writing to a binary file handle.
    """
    tmp = os.path.join(folder, f".tmp-{name[:100]}-{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, os.path.join(folder, name))
    except BaseException:
        _remove(tmp)
        raise
    _sync_folder(folder)


def write_archive(path, document, weights):
    """Write a model to a directory or a ``.zip`` file, replacing any there.

    ``path`` holds a whole model at every instant, also if the process is
    killed or the disk fills up: the old one until the new one is complete.

    - ``.zip``: the zip is written to a temporary file beside ``path``,
      synced to disk, and renamed over ``path``.
    - directory: the weights go to a file of their own,
      ``model-<hash>.safetensors``, then ``config.json``, which names that
      file, is written the same way. Renaming ``config.json`` into place
      switches from the old model to the new one; only then are the old
      weights removed.

    After a successful write, temporary files of this target left by a killed
    write (older than :data:`STALE_TEMP_SECONDS`) are removed; no other file
    is touched.

    Parameters
    ----------
    path : str or os.PathLike
    document : dict
        The contents of ``config.json``, without its ``"weights"`` entry,
        which is filled here (file name, SHA-256, size).
    weights : bytes
        The safetensors file.
    """
    path = os.fspath(path)
    digest = sha256(weights)
    if _is_zip_path(path):
        config = dumps_json({**document, "weights": {
            "file": WEIGHTS_NAME, "sha256": digest, "bytes": len(weights)}})

        def write_zip(handle):
            with zipfile.ZipFile(handle, "w") as archive:
                archive.writestr(CONFIG_NAME, config, zipfile.ZIP_DEFLATED)
                # Stored, not deflated: weights barely compress and read faster so.
                archive.writestr(WEIGHTS_NAME, weights, zipfile.ZIP_STORED)

        folder, target = os.path.split(os.path.abspath(path))
        _write_file(folder, target, write_zip)
        _remove_stale_temps(folder, _temp_pattern(re.escape(target[:100])))
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(
            f"{path!r} is a file: save to a directory path, or to a path ending "
            "in .zip."
        )
    os.makedirs(path, exist_ok=True)
    name = f"model-{digest[:16]}.safetensors"
    config = dumps_json({**document, "weights": {
        "file": name, "sha256": digest, "bytes": len(weights)}})
    # The same weights saved again keep their file: then it is not ours to remove.
    new_file = not os.path.exists(os.path.join(path, name))
    _write_file(path, name, weights)
    try:
        _write_file(path, CONFIG_NAME, config)
    except BaseException:
        if new_file:
            _remove(os.path.join(path, name))
        raise
    for entry in os.scandir(path):
        if entry.name != name and _WEIGHTS_FILE.fullmatch(entry.name):
            _remove(entry.path)
    _remove_stale_temps(
        path, _temp_pattern(r"config\.json|model-[0-9a-f]{16}\.safetensors")
    )


def _too_large(where, name, size, limit, why):
    return ModelFileError(
        f"{where}: {name} holds {size} bytes; at most {limit} are allowed ({why}). "
        "It was padded or edited, or is not a sklears-neural model: nothing was "
        "loaded."
    )


def _read_at_most(handle, limit, where, name, why):
    """``handle``'s bytes, refused past ``limit`` whatever size was declared."""
    # A declared size can lie (a zip header, a file still growing): read one
    # byte past the limit, never more, to tell.
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise _too_large(where, name, f"more than {limit}", limit, why)
    return data


class ArchiveReader:
    """A saved model, a directory or a ``.zip`` file, opened for bounded reads.

    Each entry's size is checked before it is read, and the read stops one
    byte past the limit whatever the entry declares, so a zip bomb or a padded
    file costs no more memory than an honest model. Use it as a context
    manager: ``with ArchiveReader(path) as archive: archive.read_config()``.

    Parameters
    ----------
    path : str or os.PathLike

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ModelFileError
        If ``path`` is neither a directory nor a readable zip archive.
    """

    def __init__(self, path):
        self.where = os.fspath(path)
        self._zip = self._handle = None
        if os.path.isdir(self.where):
            return
        if not os.path.exists(self.where):
            raise FileNotFoundError(f"No saved model at {self.where!r}.")
        self._handle, _ = self._open_file(self.where, "the file")
        try:
            self._zip = zipfile.ZipFile(self._handle)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
            self.close()
            raise self._unreadable(exc) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Close the zip file, if one is open."""
        if self._zip is not None:
            self._zip.close()
        if self._handle is not None:
            self._handle.close()

    def _unreadable(self, exc):
        return ModelFileError(
            f"{self.where} is not a readable zip archive ({exc}); it was truncated or "
            "edited. Save the model again."
        )

    def _open_file(self, file, name):
        # O_NONBLOCK: opening a FIFO planted under an entry's name would
        # otherwise wait forever for a writer.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(file, flags)
        except FileNotFoundError:
            raise ModelFileError(
                f"{self.where} has no {name}: it is not a model saved by "
                "sklears-neural."
            ) from None
        except IsADirectoryError:
            fd = None
        info = None if fd is None else os.fstat(fd)
        if info is None or not stat.S_ISREG(info.st_mode):
            if fd is not None:
                os.close(fd)
            raise ModelFileError(
                f"{self.where}: {name} is not a regular file (a directory, device or "
                "pipe); it is not a model saved by sklears-neural."
            )
        return os.fdopen(fd, "rb"), info.st_size

    def read(self, name, limit, why):
        """The bytes of entry ``name``, refused if it holds more than ``limit``.

        Parameters
        ----------
        name : str
            ``config.json`` or the weights file.
        limit : int
            Bytes allowed.
        why : str
            Where the limit comes from, for the message.

        Raises
        ------
        ModelFileError
            If the entry is missing, larger than ``limit``, compressed by
            another method than deflate or more than :data:`MAX_INFLATION`
            times, encrypted, or unreadable.
        """
        if self._zip is None:
            handle, size = self._open_file(os.path.join(self.where, name), name)
            with handle:
                if size > limit:
                    raise _too_large(self.where, name, size, limit, why)
                return _read_at_most(handle, limit, self.where, name, why)
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise ModelFileError(
                f"{self.where}: the archive has no {name}; it is not a model saved by "
                "sklears-neural."
            ) from None
        if info.flag_bits & 0x1 or info.compress_type not in (
            zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
        ):
            raise ModelFileError(
                f"{self.where}: {name} is encrypted or compressed by method "
                f"{info.compress_type}; save writes plain stored or deflated entries "
                "only. Repack the archive without a password with zip's default "
                "compression."
            )
        if info.file_size > limit:
            raise _too_large(self.where, name, info.file_size, limit, why)
        if info.file_size > MAX_INFLATION * info.compress_size:
            raise ModelFileError(
                f"{self.where}: {name} inflates from {info.compress_size} to "
                f"{info.file_size} bytes, more than MAX_INFLATION={MAX_INFLATION} "
                "times: a zip bomb, or padding. Nothing was loaded."
            )
        try:
            with self._zip.open(info) as handle:
                return _read_at_most(handle, limit, self.where, name, why)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise self._unreadable(exc) from None

    def read_config(self):
        """The bytes of ``config.json``, at most :data:`MAX_CONFIG_BYTES`."""
        return self.read(CONFIG_NAME, MAX_CONFIG_BYTES, "MAX_CONFIG_BYTES")

    def read_weights(self, config):
        """The weights ``config["weights"]`` names, at most the size it records.

        Raises
        ------
        ModelFileError
            If the entry is malformed, names a file save does not write, or
            the file holds more bytes than recorded.
        """
        entry = config.get("weights")
        name, size = entry.get("file"), entry.get("bytes")
        if not isinstance(name, str) or not _WEIGHTS_FILE.fullmatch(name) or (
            type(size) is not int or size < 0
        ):
            raise ModelFileError(
                f"{self.where}: {CONFIG_NAME} names the weights {name!r:.100} of "
                f"{size!r:.30} bytes; save writes model.safetensors or "
                "model-<hash>.safetensors and their size in bytes. The file was edited."
            )
        return self.read(name, size, f"the size {CONFIG_NAME} records")


def _refuse_constant(name):
    # Python's json reads NaN and Infinity, which JSON does not have; save
    # writes non-finite floats as {"__float__": "nan"}.
    raise ValueError(f"{name} is not JSON")


def parse_config(config_bytes, *, where):
    """The dict in ``config.json``, checked to be a sklears-neural model config.

    Raises
    ------
    ModelFileError
        If it is not valid UTF-8 JSON or not a sklears-neural config.
    """
    try:
        text = config_bytes.decode("utf-8")
        config = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"{where}: {CONFIG_NAME} is not valid JSON ({exc}); it was truncated or "
            "edited."
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{where}: {CONFIG_NAME} does not describe a sklears-neural model "
            f"(no \"format\": \"{FORMAT_NAME}\")."
        )
    return config


def dumps_json(value):
    """Strict JSON (no NaN/Infinity), as UTF-8 bytes."""
    text = json.dumps(value, allow_nan=False, indent=1, ensure_ascii=False)
    return text.encode("utf-8")


def sha256(data):
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
