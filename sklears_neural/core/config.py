"""Estimators as plain data: ``get_config``, :func:`from_config`, templates.

A config is ``{"class": "MLPClassifier", "params": {...}}``: a registered
class name and its parameters as JSON (tuples, non-finite floats and dicts
with non-string keys are tagged, see :mod:`sklears_neural.core.serialization`).
It builds an unfitted estimator, the same one ``clone`` would give.
:func:`from_config` also reads JSON and YAML files, the ``config.json`` of a
saved model, and the named templates in :data:`TEMPLATES`.

A parameter JSON cannot hold (callback objects, a ``RandomState``) is written
as ``null`` with a :class:`~sklears_neural.exceptions.PersistenceWarning`
naming it, rather than refused: a config is the estimator's settings, and
those objects are set again in code.
"""

import copy
import difflib
import inspect
import json
import os
import re

from sklears_neural.core import registry
from sklears_neural.core.resolve import Resolver
from sklears_neural.core.serialization import (
    MAX_CONFIG_BYTES,
    ArchiveReader,
    decode_params,
    encode_params,
    migrate,
    parse_config,
)

__all__ = ["TEMPLATES", "estimator_config", "from_config", "instantiate"]

_CONFIG_KEYS = ("class", "params")

#: Named configs for common tasks: ``from_config("mlp-small-tabular")``.
#: Names ignore case, ``-`` and ``_``. Only classes that exist get a template.
TEMPLATES = Resolver(
    "config template",
    {
        # Tabular classification on standardized features: two hidden
        # layers and mini-batches of 32, which suit a few hundred to a few
        # hundred thousand rows. Training stops when the training loss stops
        # improving, as in scikit-learn: a held-out split of a small data set
        # is too noisy to stop on.
        "mlp-small-tabular": {
            "class": "MLPClassifier",
            "params": {
                "hidden_layer_sizes": {"__tuple__": [64, 32]},
                "activation": "relu",
                "solver": "adam",
                "alpha": 1e-4,
                "batch_size": 32,
                "learning_rate_init": 1e-3,
                "max_iter": 200,
                "early_stopping": False,
                "n_iter_no_change": 10,
            },
        },
        # Regression on standardized features and targets: the same network,
        # squared error, and early stopping on the held-out R^2 (continuous,
        # so a steadier signal than a small split's accuracy).
        "mlp-regression": {
            "class": "MLPRegressor",
            "params": {
                "loss": "squared_error",
                "hidden_layer_sizes": {"__tuple__": [64, 32]},
                "activation": "relu",
                "solver": "adam",
                "alpha": 1e-4,
                "batch_size": 32,
                "learning_rate_init": 1e-3,
                "max_iter": 300,
                "early_stopping": True,
                "validation_fraction": 0.1,
                "n_iter_no_change": 20,
            },
        },
    },
)


def estimator_config(estimator, *, stacklevel=2):
    """``{"class": ..., "params": {...}}`` for ``estimator``, JSON-able.

    Parameters
    ----------
    estimator : estimator instance
        Of a registered class.
    stacklevel : int, default=2
        Of the warnings: 2 names the caller of this function.

    Returns
    -------
    dict

    Raises
    ------
    TypeError
        If the estimator's class is not registered.

    Warns
    -----
    PersistenceWarning
        For each parameter recorded as ``None``.
    """
    cls = type(estimator)
    return {
        "class": registry.estimator_name(cls),
        "params": encode_params(
            estimator.get_params(deep=False), owner=cls.__name__,
            stacklevel=stacklevel + 1,
        ),
    }


def instantiate(cls, params):
    """``cls(**params)``, validated: unknown names and bad values raise now.

    Raises
    ------
    ValueError
        If a name is not a parameter of ``cls`` (the message lists those
        that are), or a value is invalid (``InvalidParameterError``).
    """
    valid = cls._get_param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown and _takes_keywords(cls):
        # Its __init__ takes **kwargs (NeuralNet's module__<name>): the
        # class itself says which names it accepts.
        try:
            estimator = cls(**params)
        except TypeError as exc:
            raise ValueError(f"Invalid parameter(s) for {cls.__name__}: {exc}") from None
        estimator._validate_params()
        return estimator
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown parameter(s) {unknown} for {cls.__name__}. Valid parameters "
            f"are: {', '.join(valid)}.{hint}"
        )
    estimator = cls(**params)
    estimator._validate_params()
    return estimator


def _takes_keywords(cls):
    signature = inspect.signature(cls.__init__)
    return any(p.kind is inspect.Parameter.VAR_KEYWORD
               for p in signature.parameters.values())


def _yaml():
    try:
        import yaml
    except ImportError:
        raise ImportError(
            "Reading YAML configs needs PyYAML, which is not installed. Install "
            "the extra: pip install 'sklears-neural[yaml]'."
        ) from None
    return yaml


# YAML 1.2 floats: PyYAML follows YAML 1.1, where "1e-4" (no dot) is a string.
_YAML_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _load_yaml(text, where):
    yaml = _yaml()

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader (plain data, no Python tags), with YAML 1.2 floats.

        Aliases (``*name``) are refused: nested ones expand exponentially
        (a "billion laughs" file of a few hundred bytes), and a config has
        no use for them.
        """

        def compose_node(self, parent, index):
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in a config",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789.")
    )
    try:
        loader = Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        # Python tags (!!python/object...) land here too: plain data only.
        raise ValueError(f"{where} is not a valid YAML config: {exc}") from None


def _read_file(path):
    where = os.fspath(path)
    lower = where.lower()
    if os.path.isdir(where) or lower.endswith(".zip"):
        with ArchiveReader(where) as archive:
            config_bytes = archive.read_config()
        saved = migrate(parse_config(config_bytes, where=where), where=where)
        return {key: saved.get(key) for key in _CONFIG_KEYS}
    if not lower.endswith((".json", ".yaml", ".yml")):
        raise ValueError(
            f"Cannot read a config from {where!r}: use a .json, .yaml or .yml file, "
            "a saved model (directory or .zip), or a template name: "
            f"{', '.join(TEMPLATES.names)}."
        )
    with open(where, encoding="utf-8") as handle:
        # Bounded as a saved model's config.json is.
        text = handle.read(MAX_CONFIG_BYTES + 1)
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{where} is larger than a config may be ({MAX_CONFIG_BYTES} "
            "characters); configs hold parameters, not data."
        )
    if lower.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{where} is not valid JSON: {exc}") from None
    return _load_yaml(text, where)


def from_config(config, **params):
    """An unfitted estimator built from a config, a template or a file.

    Parameters
    ----------
    config : dict, str or os.PathLike
        A ``{"class": ..., "params": {...}}`` dict (what ``get_config``
        returns); a template name from :data:`TEMPLATES`
        (``"mlp-small-tabular"``, ``"mlp-regression"``); or a path to a
        ``.json`` / ``.yaml`` / ``.yml`` file holding such a dict, or to a
        model saved by ``save`` (its parameters, not its weights). YAML needs
        PyYAML (``pip install 'sklears-neural[yaml]'``).
    **params
        Parameters set on top of the config's (``random_state=0``).

    Returns
    -------
    estimator
        Unfitted, with its parameters validated.

    Raises
    ------
    ValueError
        If the class is not registered, a parameter is unknown or invalid,
        or ``config`` is neither a template nor a readable file.
    FileNotFoundError
        If a path with a config suffix does not exist.

    Examples
    --------
    >>> from sklears_neural.core.config import from_config
    >>> clf = from_config("mlp-small-tabular", random_state=0)
    >>> clf.hidden_layer_sizes
    (64, 32)
    """
    if isinstance(config, dict):
        data, where = config, "the config"
    elif isinstance(config, (str, os.PathLike)):
        where = os.fspath(config)
        is_template = isinstance(config, str) and TEMPLATES.knows(config)
        if is_template and not os.path.exists(config):
            data = copy.deepcopy(TEMPLATES(config))
        elif os.path.exists(where) or where.lower().endswith(
            (".json", ".yaml", ".yml", ".zip")
        ):
            data = _read_file(config)
        else:
            close = difflib.get_close_matches(where, TEMPLATES.names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{where!r} is neither a config template nor a file. Templates: "
                f"{', '.join(TEMPLATES.names)}.{hint}"
            )
    else:
        raise TypeError(
            f"from_config expects a dict, a template name or a path, got "
            f"{type(config).__name__}."
        )
    if (not isinstance(data, dict) or "class" not in data
            or set(data) - set(_CONFIG_KEYS)):
        raise ValueError(
            f"{where}: a config is a mapping with the keys 'class' and (optionally) "
            f"'params', got {data!r:.200}."
        )
    cls = registry.estimator_class(data["class"])
    decoded = decode_params(data.get("params") or {}, where=where)
    decoded.update(params)
    return instantiate(cls, decoded)
