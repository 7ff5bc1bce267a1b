"""The classes a saved model or a config file may name, by explicit registration.

``load`` and ``from_config`` turn a class name read from a file into a class
through these two tables only; they never import a module or follow a dotted
path named by the file, so a file cannot make the library run code it does not
already ship. A family registers its estimators and its ``nn.Module`` classes
where it defines them::

    @register_estimator
    class CNNClassifier(...):
        ...

The tables fill when :mod:`sklears_neural` is imported (its ``__init__``
imports every family); the lookup functions import it first, so they work
even when only a core module was imported.
"""

import difflib

__all__ = [
    "register_estimator",
    "register_module",
    "estimator_class",
    "module_class",
    "estimator_name",
    "module_name",
    "registered_estimators",
    "registered_modules",
]

_ESTIMATORS = {}
_MODULES = {}


def _register(table, kind, cls, name, base):
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise TypeError(
            f"register_{kind} expects a subclass of "
            f"{base.__module__}.{base.__qualname__}, got {cls!r}."
        )
    name = cls.__name__ if name is None else name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"A registered {kind} name must be an identifier, got {name!r}."
        )
    known = table.get(name)
    if known is not None and known is not cls and (
        (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__)
    ):
        # The same class re-created by a module reload may replace itself;
        # another class may not take the name.
        raise ValueError(
            f"The {kind} name {name!r} is already registered to "
            f"{known.__module__}.{known.__qualname__}; pass name=... to register "
            f"{cls.__module__}.{cls.__qualname__} under another name."
        )
    table[name] = cls
    return cls


def register_estimator(cls=None, *, name=None):
    """Let ``load`` and ``from_config`` build ``cls`` from its name.

    Usable as ``register_estimator(cls)`` or as a class decorator.

    Parameters
    ----------
    cls : type
        A scikit-learn estimator class (a ``BaseEstimator`` subclass).
    name : str, default=None
        The name written to files; ``cls.__name__`` when ``None``.

    Returns
    -------
    cls : type
        Unchanged.
    """
    from sklearn.base import BaseEstimator

    if cls is None:
        return lambda c: _register(_ESTIMATORS, "estimator", c, name, BaseEstimator)
    return _register(_ESTIMATORS, "estimator", cls, name, BaseEstimator)


def register_module(cls=None, *, name=None):
    """Let a saved model name ``cls`` as the class of its network.

    Usable as ``register_module(cls)`` or as a class decorator.

    Parameters
    ----------
    cls : type
        A ``torch.nn.Module`` subclass returned in a ``ModuleSpec``.
    name : str, default=None
        The name written to files; ``cls.__name__`` when ``None``.

    Returns
    -------
    cls : type
        Unchanged.
    """
    from torch import nn

    if cls is None:
        return lambda c: _register(_MODULES, "module", c, name, nn.Module)
    return _register(_MODULES, "module", cls, name, nn.Module)


# The optional packages the reinforcement-learning agents need (the rl extra).
_RL_EXTRA = frozenset({"gymnasium", "pettingzoo"})


def _populate():
    # The package's __init__ imports every family, which registers its
    # classes; the reinforcement-learning agents register where their extra
    # is installed, so that a file saved from an agent loads in a fresh
    # process. Fixed imports: nothing here comes from a file.
    import sklears_neural  # noqa: F401

    try:  # gymnasium
        import sklears_neural.rl.dqn  # noqa: F401
        import sklears_neural.rl.policy_gradient  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name not in _RL_EXTRA:
            raise
    try:  # gymnasium and pettingzoo
        import sklears_neural.rl.multi_agent  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name not in _RL_EXTRA:
            raise


def _lookup(table, kind, name):
    _populate()
    if isinstance(name, str) and name in table:
        return table[name]
    choices = sorted(table)
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown {kind} class {name!r:.100}: only registered classes can be loaded, "
        f"by name, never by import path. Registered: {', '.join(choices) or 'none'}."
        f"{hint}"
    )


def estimator_class(name):
    """The estimator class registered under ``name``.

    Raises
    ------
    ValueError
        If no estimator is registered under ``name``; the message lists
        those that are.
    """
    return _lookup(_ESTIMATORS, "estimator", name)


def module_class(name):
    """The ``nn.Module`` class registered under ``name``.

    Raises
    ------
    ValueError
        If no module is registered under ``name``; the message lists those
        that are.
    """
    return _lookup(_MODULES, "module", name)


def _name_of(table, kind, cls):
    _populate()
    for name, known in table.items():
        if known is cls:
            return name
    raise TypeError(
        f"{cls.__module__}.{cls.__qualname__} is not a registered {kind} class, so a "
        "saved file could not name it. Call "
        f"sklears_neural.core.registry.register_{kind}({cls.__name__}) where it "
        "is defined."
    )


def estimator_name(cls):
    """The name under which estimator class ``cls`` is registered.

    Raises
    ------
    TypeError
        If ``cls`` is not registered (a user subclass, for instance).
    """
    return _name_of(_ESTIMATORS, "estimator", cls)


def module_name(cls):
    """The name under which module class ``cls`` is registered.

    Raises
    ------
    TypeError
        If ``cls`` is not registered.
    """
    return _name_of(_MODULES, "module", cls)


def registered_estimators():
    """Sorted names of the registered estimator classes."""
    _populate()
    return sorted(_ESTIMATORS)


def registered_modules():
    """Sorted names of the registered module classes."""
    _populate()
    return sorted(_MODULES)
