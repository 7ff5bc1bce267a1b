"""Network building blocks of the families: plain ``torch.nn`` modules.

Each module takes only JSON-able constructor arguments, so that a
:class:`~sklears_neural.core.layers.ModuleSpec` of it is plain data (pickle,
``save``/``load`` and configs rebuild it), and registers itself with
:func:`~sklears_neural.core.registry.register_module`. The estimators in
:mod:`sklears_neural.models` build them; users may train them by hand too.
"""

# Imported for their registration: ``load`` finds a saved network's class by
# name only among registered ones.
from sklears_neural.nn import (  # noqa: E402,F401
    attention,
    autoencoder,
    conv,
    diffusion,
    energy,
    flows,
    gan,
    gnn,
    recurrent,
    self_supervised,
    seq2seq,
    transformer,
)
