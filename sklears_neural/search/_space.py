"""Search spaces: hyper-parameter distributions and the MLP architecture space.

A search space here is two parts. ``param_distributions`` is a dict like
:class:`~sklearn.model_selection.RandomizedSearchCV`'s: each value a list
of choices or a frozen ``scipy.stats`` distribution (anything with
``rvs``). :class:`ArchitectureSpace` describes layer stacks (depth range,
width choices, activation choices) and knows the moves the searchers make
on them: sample, mutate, cross over, grow.
"""

from numbers import Integral, Real

import numpy as np

__all__ = ["ArchitectureSpace", "ParamSpace"]


def _is_distribution(value):
    return hasattr(value, "rvs")


def _draw(choices, rng):
    """One value of a list of choices or of a scipy distribution."""
    if _is_distribution(choices):
        value = choices.rvs(random_state=rng)
        # numpy scalars -> Python scalars, so params print and compare simply
        return value.item() if hasattr(value, "item") else value
    return choices[rng.randint(len(choices))]


class ParamSpace:
    """Hyper-parameters to search: ``{name: list of choices or distribution}``.

    Parameters
    ----------
    param_distributions : dict or None
        Parameter names of the searched estimator mapped to a non-empty
        list of values, or to an object with an ``rvs(random_state=...)``
        method (a frozen ``scipy.stats`` distribution).
    """

    def __init__(self, param_distributions):
        self.param_distributions = dict(param_distributions or {})
        for name, choices in self.param_distributions.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"param_distributions keys must be parameter names (str), got {name!r}."
                )
            if _is_distribution(choices):
                continue
            if isinstance(choices, (str, bytes)) or not hasattr(choices, "__len__"):
                raise TypeError(
                    f"param_distributions[{name!r}] must be a list of values or a "
                    f"scipy.stats distribution, got {choices!r}. Wrap a single value "
                    f"in a list: [{choices!r}]."
                )
            if len(choices) == 0:
                raise ValueError(f"param_distributions[{name!r}] is an empty list.")
            self.param_distributions[name] = list(choices)

    @property
    def names(self):
        return list(self.param_distributions)

    def sample(self, rng):
        """A dict of one value per parameter."""
        return {name: _draw(choices, rng) for name, choices in self.param_distributions.items()}

    def mutate(self, params, rng, rate):
        """Redraw each parameter with probability ``rate``; a list choice
        changes to a different value when it has more than one."""
        params = dict(params)
        for name, choices in self.param_distributions.items():
            if rng.rand() >= rate:
                continue
            if _is_distribution(choices):
                params[name] = _draw(choices, rng)
            elif len(choices) > 1:
                others = [c for c in choices if not _equal(c, params.get(name))]
                params[name] = others[rng.randint(len(others))]
        return params

    def crossover(self, first, second, rng):
        """Each parameter from either parent with equal chance."""
        return {
            name: (first if rng.rand() < 0.5 else second)[name]
            for name in self.param_distributions
        }

    def features(self, params):
        """Numbers a performance predictor reads: log10 of positive numeric
        values (learning rates and penalties span decades), the value of
        other numbers, a one-hot code of categorical choices."""
        row = []
        for name, choices in self.param_distributions.items():
            value = params[name]
            numeric = isinstance(value, Real) and not isinstance(value, bool)
            if numeric:
                positive = (
                    all(isinstance(c, Real) and c > 0 for c in choices)
                    if not _is_distribution(choices) else value > 0
                )
                row.append(float(np.log10(value)) if positive else float(value))
            else:
                row.extend(float(_equal(value, c)) for c in choices)
        return row


def _equal(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # arrays compare elementwise
        return a is b


class ArchitectureSpace:
    """Stacks of hidden layers: depth range, width choices, activations.

    The searchers read and write two parameters of the estimator: the
    layer widths (``layers_param``, ``hidden_layer_sizes`` for our MLPs)
    and, when ``activations`` lists more than one, the activation.

    Parameters
    ----------
    n_layers : (int, int), default=(1, 3)
        Smallest and largest number of hidden layers, both included.
    widths : sequence of int, default=(16, 32, 64, 128, 256)
        Widths a layer may take. Mutation and growth move a width to a
        neighbouring choice in sorted order.
    activations : sequence of str or None, default=("relu", "tanh")
        Activation names to search; None leaves the estimator's own.
    layers_param : str, default="hidden_layer_sizes"
        Estimator parameter that takes the tuple of widths.
    activation_param : str, default="activation"
        Estimator parameter that takes the activation name.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.search import ArchitectureSpace
    >>> space = ArchitectureSpace(n_layers=(1, 2), widths=(8, 16), activations=None)
    >>> space.sample(np.random.RandomState(0))
    {'hidden_layer_sizes': (16,)}
    >>> space.grow({"hidden_layer_sizes": (8,)})
    [{'hidden_layer_sizes': (16,)}, {'hidden_layer_sizes': (8, 8)}, {'hidden_layer_sizes': (8, 16)}]
    """

    def __init__(self, n_layers=(1, 3), widths=(16, 32, 64, 128, 256),
                 activations=("relu", "tanh"), *, layers_param="hidden_layer_sizes",
                 activation_param="activation"):
        self.n_layers = n_layers
        self.widths = widths
        self.activations = activations
        self.layers_param = layers_param
        self.activation_param = activation_param
        self._validate()

    def _validate(self):
        low, high = self.n_layers
        if not (isinstance(low, Integral) and isinstance(high, Integral) and 1 <= low <= high):
            raise ValueError(
                f"n_layers must be (min, max) with 1 <= min <= max, got {self.n_layers!r}."
            )
        widths = list(self.widths)
        if not widths or any(not isinstance(w, Integral) or w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of ints >= 1, got {self.widths!r}.")
        self._widths = sorted(set(int(w) for w in widths))
        if self.activations is not None and len(self.activations) == 0:
            raise ValueError("activations is empty; pass None to keep the estimator's own.")

    def __repr__(self):
        return (
            f"ArchitectureSpace(n_layers={self.n_layers!r}, widths={self.widths!r}, "
            f"activations={self.activations!r})"
        )

    @property
    def names(self):
        names = [self.layers_param]
        if self.activations is not None:
            names.append(self.activation_param)
        return names

    def _pack(self, layers, activation):
        params = {self.layers_param: tuple(int(w) for w in layers)}
        if self.activations is not None:
            params[self.activation_param] = activation
        return params

    def _unpack(self, params):
        return list(params[self.layers_param]), params.get(self.activation_param)

    def sample(self, rng):
        """A random architecture: depth, then each width, then activation."""
        low, high = self.n_layers
        depth = rng.randint(low, high + 1)
        layers = [self._widths[rng.randint(len(self._widths))] for _ in range(depth)]
        activation = None
        if self.activations is not None:
            activation = self.activations[rng.randint(len(self.activations))]
        return self._pack(layers, activation)

    def _step_width(self, width, step):
        """The width ``step`` places along the sorted choices, or None."""
        position = int(np.searchsorted(self._widths, width))
        position = min(position, len(self._widths) - 1)
        moved = position + step
        return self._widths[moved] if 0 <= moved < len(self._widths) else None

    def mutate(self, params, rng):
        """One random move: add or remove a layer, resize one, or swap the
        activation. Moves that would leave the space are not drawn."""
        layers, activation = self._unpack(params)
        low, high = self.n_layers
        moves = ["resize"]
        if len(layers) < high:
            moves.append("add")
        if len(layers) > low:
            moves.append("remove")
        if self.activations is not None and len(self.activations) > 1:
            moves.append("activation")
        move = moves[rng.randint(len(moves))]
        if move == "add":
            layers.insert(rng.randint(len(layers) + 1), self._widths[rng.randint(len(self._widths))])
        elif move == "remove":
            del layers[rng.randint(len(layers))]
        elif move == "resize":
            at = rng.randint(len(layers))
            steps = [s for s in (-1, 1) if self._step_width(layers[at], s) is not None]
            if steps:
                layers[at] = self._step_width(layers[at], steps[rng.randint(len(steps))])
        else:
            activation = [a for a in self.activations if a != activation][
                rng.randint(len(self.activations) - 1)
            ]
        return self._pack(layers, activation)

    def crossover(self, first, second, rng):
        """One-point crossover: the head of one parent's stack, the tail of
        the other's, cut to the depth range; the activation of either."""
        head, act_a = self._unpack(first)
        tail, act_b = self._unpack(second)
        layers = head[: rng.randint(len(head) + 1)] + tail[rng.randint(len(tail) + 1):]
        low, high = self.n_layers
        layers = layers[:high]
        while len(layers) < low:
            layers.append((head + tail)[len(layers) % len(head + tail)])
        return self._pack(layers, act_a if rng.rand() < 0.5 else act_b)

    def smallest(self):
        """The architectures of least depth, each at every width, as the
        start of a progressive search (all activations)."""
        low = self.n_layers[0]
        activations = self.activations if self.activations is not None else [None]
        return [
            self._pack([width] * low, activation)
            for width in self._widths for activation in activations
        ]

    def grow(self, params):
        """The architectures one step more complex: one layer widened to the
        next width, or one layer of each width appended at the end."""
        layers, activation = self._unpack(params)
        grown = []
        for at, width in enumerate(layers):
            wider = self._step_width(width, 1)
            if wider is not None:
                grown.append(self._pack(layers[:at] + [wider] + layers[at + 1:], activation))
        if len(layers) < self.n_layers[1]:
            grown.extend(self._pack(layers + [w], activation) for w in self._widths)
        return grown

    def features(self, params):
        """Numbers a performance predictor reads: depth, log2 of the widths
        (first, last, mean, total), and a one-hot activation."""
        layers, activation = self._unpack(params)
        logs = np.log2(np.asarray(layers, dtype=float))
        row = [len(layers), logs[0], logs[-1], logs.mean(), np.log2(float(sum(layers)))]
        if self.activations is not None:
            row.extend(float(activation == a) for a in self.activations)
        return [float(v) for v in row]

    def n_weights(self, params, n_inputs, n_outputs):
        """Weights and biases of the dense stack (a predictor feature)."""
        layers, _ = self._unpack(params)
        sizes = [n_inputs, *layers, n_outputs]
        return int(sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:])))
