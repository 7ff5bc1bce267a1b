"""Building blocks shared by model families, and the module spec they return."""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from sklears_neural.core.resolve import ACTIVATIONS

__all__ = ["ModuleSpec", "MLP", "sklearn_uniform_"]


@dataclass(frozen=True)
class ModuleSpec:
    """How to build a family's module: a class and JSON-able keyword arguments.

    Families return one from ``_build_module``; the estimator keeps it as
    fitted state, so a pickled (or, later, saved) estimator rebuilds the
    same architecture from plain data and loads the weights into it.

    Parameters
    ----------
    module_class : type
        A ``torch.nn.Module`` subclass whose ``__init__`` takes ``kwargs``.
    kwargs : dict
        Plain Python values only (ints, floats, strings, lists).
    """

    module_class: type
    kwargs: dict = field(default_factory=dict)

    def build(self):
        """A new module.

        torch layers draw their default initialization from the global
        generator; it is restored afterwards, so building never changes the
        caller's random stream. Estimators re-initialize from their own
        generator (``reset_parameters(generator=...)``).
        """
        with torch.random.fork_rng(devices=[]):
            return self.module_class(**self.kwargs)


def sklearn_uniform_(linear, *, factor, generator):
    """scikit-learn's MLP initialization (Glorot uniform), in place.

    Weights and biases are drawn from ``U(-b, b)`` with
    ``b = sqrt(factor / (fan_in + fan_out))``; scikit-learn uses
    ``factor=2`` for logistic activations and ``6`` otherwise.

    Parameters
    ----------
    linear : torch.nn.Linear
    factor : float
    generator : torch.Generator or None
    """
    fan_out, fan_in = linear.weight.shape
    bound = math.sqrt(factor / (fan_in + fan_out))
    with torch.no_grad():
        for tensor in (linear.weight, linear.bias):
            tensor.uniform_(-bound, bound, generator=generator)


class MLP(nn.Module):
    """A stack of fully connected layers; the last one has no activation.

    Parameters
    ----------
    n_inputs : int
        Input width (``n_features_in_``).
    hidden_layer_sizes : list of int
        Widths of the hidden layers, possibly empty.
    n_outputs : int
        Output width (raw scores: logits, or the regression link's input).
    activation : str
        Hidden activation, a name from ``ACTIVATIONS``.

    Shapes
    ------
    - input: ``(batch, n_inputs)``
    - output: ``(batch, n_outputs)``
    """

    def __init__(self, n_inputs, hidden_layer_sizes, n_outputs, activation="relu"):
        super().__init__()
        widths = [n_inputs, *hidden_layer_sizes, n_outputs]
        act = ACTIVATIONS(activation)
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(widths) - 2:
                layers.append(act())
        self.layers = nn.Sequential(*layers)
        self.activation = activation

    @property
    def linears(self):
        """The ``nn.Linear`` layers, input to output."""
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def reset_parameters(self, generator=None):
        """scikit-learn's initialization, drawn from ``generator``."""
        factor = 2.0 if ACTIVATIONS.canonical(self.activation) == "logistic" else 6.0
        for linear in self.linears:
            sklearn_uniform_(linear, factor=factor, generator=generator)

    def forward(self, x):
        return self.layers(x)
