"""Gradient attributions of our networks: saliency maps and their refinements.

Each method differentiates the explained output (``output``: a classifier's
probability by default, its logit with ``output="logit"``, a regressor's
prediction) with respect to the input as the user passes it, through a
float64 copy of the fitted network in evaluation mode.

- :class:`Saliency`: the gradient (Simonyan et al., 2014).
- :class:`IntegratedGradients`: the gradient integrated along the straight
  path from a baseline (Sundararajan et al., 2017).
- :class:`SmoothGrad`: either of them averaged over noisy copies of the
  input (Smilkov et al., 2017); captum's ``NoiseTunnel``.
- :class:`GuidedBackprop`: the gradient with only positive gradients let
  back through ReLU-family activations (Springenberg et al., 2015).

Layer-wise relevance propagation is in :mod:`sklears_neural.explain.lrp`.

The settings keep captum's names (``n_steps``, ``method``, ``baselines``,
``multiply_by_inputs``, ``nt_type``, ``nt_samples``, ``stdevs``) and their
meaning; the tests check each method against captum on the same model.
``batch_size`` bounds every forward/backward pass: no method ever builds
more than ``batch_size`` model inputs at once (integrated gradients split
a row's steps over several passes when they do not fit in one).
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_random_state

from sklears_neural.core._compat import Interval, InvalidParameterError, StrOptions
from sklears_neural.explain._base import GradientExplainer, batch_rows
from sklears_neural.explain._model import TorchModel

__all__ = ["GuidedBackprop", "IntegratedGradients", "Saliency", "SmoothGrad"]

#: Integration rules of :class:`IntegratedGradients`, captum's names.
METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
           "gausslegendre")

#: Activations whose backward pass :class:`GuidedBackprop` rectifies.
RELU_FAMILY = (
    torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.RReLU,
    torch.nn.ELU, torch.nn.SELU, torch.nn.CELU, torch.nn.GELU, torch.nn.SiLU,
    torch.nn.Mish, torch.nn.Softplus, torch.nn.Hardswish,
)


class Saliency(GradientExplainer):
    """Saliency map: the gradient of the explained output with respect to the input.

    ``values[i] = |d f_t(x_i) / d x_i|`` (Simonyan et al., 2014), or the
    signed gradient with ``abs=False``. One forward and one backward pass per
    sample; the same as ``captum.attr.Saliency``.

    Explains ``output``: a classifier's ``predict_proba`` column of the
    target class by default, its logit with ``output="logit"``; a regressor's
    prediction.

    Parameters
    ----------
    estimator : fitted estimator of sklears_neural, or Pipeline ending in one
        Preprocessing steps must be affine (scalers, PCA) to be
        differentiated through.
    abs : bool, default=True
        Return the gradient's absolute value (captum's default).
    output : {"auto", "probability", "logit"}, default="auto"
        ``"auto"``: probabilities for classifiers, predictions for regressors.
    batch_size : int or "auto", default="auto"
        Samples per forward/backward pass; ``"auto"`` keeps a pass near
        2**20 input values.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.explain import Saliency
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPClassifier(max_iter=300, random_state=0).fit(X, y)
    >>> Saliency(model).explain(X[:5]).values.shape
    (5, 4)
    """

    _parameter_constraints: dict = {
        **GradientExplainer._parameter_constraints,
        "abs": ["boolean"],
    }

    def __init__(self, estimator, *, abs=True, output="auto", batch_size="auto"):
        self.estimator = estimator
        self.abs = abs
        self.output = output
        self.batch_size = batch_size

    def _attribute(self, model, x, targets, lengths, rows):
        grads, _ = model.gradient(x, targets, lengths)
        return grads.abs() if self.abs else grads


# -- shared machinery -------------------------------------------------------------


class _CallModel(TorchModel):
    """A :class:`TorchModel` with the per-call state of one ``explain``.

    Per-sample baselines are resolved once for the X of the call; the state
    lives here, not on the explainer, so one explainer may run in threads.
    """

    def prepare(self, X):
        x, lengths, names = super().prepare(X)
        self.n_rows = len(x)
        self.baselines = None  # resolved by the first batch, for this X
        return x, lengths, names


def _inputs_per_pass(batch_size, x):
    """Model inputs per forward/backward pass: ``batch_size``, or the auto size."""
    return batch_rows(batch_size, int(np.prod(x.shape[1:])))


def _index_lengths(lengths, index):
    return None if lengths is None else np.asarray(lengths)[np.asarray(index)]


def _gradients(model, inputs, targets, lengths, max_inputs):
    """d f_t / d input for many inputs, ``max_inputs`` per backward pass."""
    parts = []
    for start in range(0, len(inputs), max_inputs):
        chunk = slice(start, start + max_inputs)
        part_lengths = _index_lengths(lengths, range(len(inputs))[chunk])
        grads, _ = model.gradient(inputs[chunk], targets[chunk], part_lengths)
        parts.append(grads)
    return torch.cat(parts)


def _selected_outputs(model, inputs, targets, lengths, max_inputs):
    """f_t(input) per input, without gradients, ``max_inputs`` per pass."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(inputs), max_inputs):
            chunk = slice(start, start + max_inputs)
            part_lengths = _index_lengths(lengths, range(len(inputs))[chunk])
            outputs = model(inputs[chunk], part_lengths)
            parts.append(outputs.gather(1, targets[chunk].view(-1, 1)).view(-1))
    return torch.cat(parts)


def _per_row(t):
    """Sum over every axis but the first: one number per row."""
    return t.reshape(len(t), -1).sum(dim=1)


def _broadcast_rows(array, n_rows, sample_shape, name):
    """``array`` as one value per sample (shared) or one sample per row.

    Returns an ndarray of shape ``sample_shape`` (shared by all rows) or
    ``(n_rows, *sample_shape)``.
    """
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity.")
    per_row = array.ndim == len(sample_shape) + 1
    try:
        if per_row:
            if array.shape[0] not in (1, n_rows):
                raise ValueError
            shape = (array.shape[0], *sample_shape)
            out = np.broadcast_to(array, shape)
            return out[0] if array.shape[0] == 1 else out
        return np.broadcast_to(array, sample_shape)
    except ValueError:
        raise ValueError(
            f"{name} of shape {array.shape} fits neither one sample "
            f"{tuple(sample_shape)} nor one per sample ({n_rows}, "
            f"{', '.join(map(str, sample_shape))}); a scalar or an array that "
            "broadcasts to one sample is used for every sample."
        ) from None


def _noise_scale(stdevs, sample_shape):
    """``stdevs`` broadcast to one sample, checked finite and non-negative."""
    scale = np.asarray(stdevs, dtype=np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale < 0):
        raise ValueError("stdevs must be finite and non-negative.")
    try:
        return np.broadcast_to(scale, sample_shape)
    except ValueError:
        raise ValueError(
            f"stdevs of shape {scale.shape} does not broadcast to one sample "
            f"{tuple(sample_shape)}: pass a float or one value per feature."
        ) from None


# -- integrated gradients -------------------------------------------------------


def quadrature(method, n_steps):
    """Points ``alpha_k`` in [0, 1] and weights ``w_k`` of an integration rule.

    ``int_0^1 g(a) da ~= sum_k w_k g(alpha_k)``, the rules (and names) of
    captum's ``approximation_methods``: the Riemann sums take ``n_steps``
    equal steps of width ``1 / n_steps`` at their left ends, right ends or
    midpoints; ``"riemann_trapezoid"`` evaluates at the ``n_steps`` equally
    spaced points from 0 to 1 inclusive and halves the end weights (captum's
    rule: its weights sum to ``1 - 1 / n_steps``); ``"gausslegendre"`` is
    Gauss-Legendre quadrature on [0, 1], exact for polynomials up to degree
    ``2 * n_steps - 1``.

    Returns
    -------
    alphas, weights : ndarray of float64 of shape (n_steps,)
    """
    n = int(n_steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    weights = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, n), weights
    start = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(n) + start) / n, weights


def _path_gradients(model, x, baseline, targets, lengths, alphas, weights, max_inputs):
    """``sum_k w_k * grad f_t(b + alpha_k (x - b))`` per row, in bounded passes.

    The ``len(x) * n_steps`` path points are enumerated row by row and built
    ``max_inputs`` at a time, so memory holds one pass of points, not all.

    Parameters
    ----------
    x : tensor of shape (n, *feature_shape)
    baseline : tensor of shape (n, *feature_shape) or (*feature_shape,)
    alphas, weights : tensor of shape (n_steps,)
    """
    n_steps = len(alphas)
    baseline = baseline.expand_as(x)
    difference = x - baseline
    total = torch.zeros_like(x)
    per_point = (-1,) + (1,) * (x.dim() - 1)
    for start in range(0, len(x) * n_steps, max_inputs):
        point = torch.arange(start, min(start + max_inputs, len(x) * n_steps),
                             device=x.device)
        row, step = point // n_steps, point % n_steps
        inputs = baseline[row] + alphas[step].view(per_point) * difference[row]
        part_lengths = _index_lengths(lengths, row.cpu())
        grads, _ = model.gradient(inputs, targets[row], part_lengths)
        total.index_add_(0, row, grads * weights[step].view(per_point))
    return total


class IntegratedGradients(GradientExplainer):
    """Integrated gradients: the gradient averaged along the path from a baseline.

    For a sample ``x``, a baseline ``b`` and the explained output ``f_t``
    (Sundararajan et al., 2017)::

        values = (x - b) * int_0^1 grad f_t(b + a (x - b)) da

    the integral approximated by ``n_steps`` points of ``method``. The
    values satisfy completeness: they sum to ``f_t(x) - f_t(b)`` up to the
    integration error, reported per sample as ``convergence_delta``. The
    same as ``captum.attr.IntegratedGradients`` (its names, rules and
    results).

    Explains ``output``: a classifier's ``predict_proba`` column of the
    target class by default, its logit with ``output="logit"``; a
    regressor's prediction. Cost: ``n_steps`` forward and backward passes
    per sample (batched), plus two forward passes for ``f_t(x)`` and
    ``f_t(b)``.

    Parameters
    ----------
    estimator : fitted estimator of sklears_neural, or Pipeline ending in one
        Preprocessing steps must be affine (scalers, PCA); the path runs in
        the pipeline's input space.
    n_steps : int, default=50
        Points of the integration rule (at least 2 for
        ``"riemann_trapezoid"``).
    method : {"gausslegendre", "riemann_left", "riemann_right", \
"riemann_middle", "riemann_trapezoid"}, default="gausslegendre"
        Integration rule, captum's (see :func:`quadrature`).
    baselines : None, float or array-like, default=None
        The reference input ``b``, in the layout of ``X``: None (zeros), a
        scalar, one sample (or anything that broadcasts to one, e.g. one
        value per feature for sequences), or one sample per row of ``X``.
    multiply_by_inputs : bool, default=True
        Multiply the averaged gradient by ``x - b`` (integrated gradients).
        False returns the averaged gradient itself, captum's "local"
        variant; then there is no ``convergence_delta``.
    output : {"auto", "probability", "logit"}, default="auto"
        ``"auto"``: probabilities for classifiers, predictions for regressors.
    batch_size : int or "auto", default="auto"
        Model inputs (path points) per forward/backward pass. A row's
        ``n_steps`` points are split over several passes when they do not
        fit in one, so memory stays bounded for any ``n_steps``. ``"auto"``
        keeps a pass near 2**20 input values.

    Notes
    -----
    The returned :class:`Explanation` holds ``base_values`` (``f_t(b)`` per
    sample) and ``convergence_delta`` (per sample,
    ``sum(values) - (f_t(x) - f_t(b))``, captum's sign): a large delta asks
    for more steps or ``"gausslegendre"``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.explain import IntegratedGradients
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPClassifier(max_iter=300, random_state=0).fit(X, y)
    >>> ig = IntegratedGradients(model, n_steps=64, baselines=X.mean(axis=0))
    >>> explanation = ig.explain(X[:5])
    >>> explanation.values.shape
    (5, 4)
    >>> explanation.base_values.shape, explanation.convergence_delta.shape
    ((5,), (5,))
    """

    _parameter_constraints: dict = {
        **GradientExplainer._parameter_constraints,
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions(set(METHODS))],
        "baselines": [None, Real, "array-like"],
        "multiply_by_inputs": ["boolean"],
    }

    def __init__(self, estimator, *, n_steps=50, method="gausslegendre", baselines=None,
                 multiply_by_inputs=True, output="auto", batch_size="auto"):
        self.estimator = estimator
        self.n_steps = n_steps
        self.method = method
        self.baselines = baselines
        self.multiply_by_inputs = multiply_by_inputs
        self.output = output
        self.batch_size = batch_size

    def _explain(self, X, target):
        self._check_steps()
        return super()._explain(X, target)

    def _check_steps(self):
        if self.method == "riemann_trapezoid" and self.n_steps < 2:
            raise InvalidParameterError(
                f"The 'n_steps' parameter of {type(self).__name__} must be at least 2 "
                f"with method='riemann_trapezoid', which evaluates both ends of the "
                f"path. Got {self.n_steps!r}."
            )

    def _model(self):
        return _CallModel(self.estimator, self.output, method=type(self).__name__)

    def _inputs_per_row(self):
        return self.n_steps

    def _baselines(self, model, x, rows):
        """The batch's baselines: a tensor like ``x`` or like one sample."""
        if model.baselines is None:
            model.baselines = (
                np.zeros(x.shape[1:]) if self.baselines is None
                else _broadcast_rows(self.baselines, model.n_rows, tuple(x.shape[1:]),
                                     "baselines"))
        baselines = model.baselines
        if baselines.ndim > x.dim() - 1:
            baselines = baselines[rows]
        return model.tensor(baselines)

    def _attribute(self, model, x, targets, lengths, rows):
        baseline = self._baselines(model, x, rows)
        return self._integrate(model, x, baseline, targets, lengths,
                               _inputs_per_pass(self.batch_size, x))

    def _integrate(self, model, x, baseline, targets, lengths, max_inputs):
        """Attributions and extras of rows ``x`` (also used by :class:`SmoothGrad`)."""
        alphas, weights = (model.tensor(v) for v in quadrature(self.method, self.n_steps))
        mean_gradient = _path_gradients(model, x, baseline, targets, lengths, alphas,
                                        weights, max_inputs)
        baseline = baseline.expand_as(x)
        at_baseline = _selected_outputs(model, baseline, targets, lengths, max_inputs)
        extras = {"base_values": at_baseline.cpu().numpy()}
        if not self.multiply_by_inputs:
            return mean_gradient, extras
        values = mean_gradient * (x - baseline)
        at_x = _selected_outputs(model, x, targets, lengths, max_inputs)
        delta = _per_row(values) - (at_x - at_baseline)
        extras["convergence_delta"] = delta.cpu().numpy()
        return values, extras


# -- SmoothGrad -----------------------------------------------------------------


class _NoiseModel(_CallModel):
    """Per-call state plus the noise stream of one ``explain`` call."""

    def __init__(self, *args, seed, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.generator = None

    def noise(self, n_rows, n_samples, sample_shape, first_row):
        """Standard normal draws ``(n_rows * n_samples, *sample_shape)``, float64.

        Each row's ``n_samples`` draws are taken in turn from one torch
        generator, seeded again when the first row comes (each output of
        ``target="all"`` sees the same noise), as float32 standard normals:
        the draws of captum's ``NoiseTunnel`` under ``torch.manual_seed(seed)``.
        """
        if first_row == 0 or self.generator is None:
            self.generator = torch.Generator().manual_seed(self.seed)
        draws = [torch.randn((n_samples, *sample_shape), generator=self.generator,
                             dtype=torch.float32) for _ in range(n_rows)]
        return torch.cat(draws).to(device=self.device, dtype=torch.float64)


class SmoothGrad(GradientExplainer):
    """SmoothGrad: attributions averaged over noisy copies of each sample.

    For a sample ``x`` and ``nt_samples`` draws ``e_k ~ N(0, stdevs**2)``
    (Smilkov et al., 2017)::

        smoothgrad     values = mean_k A(x + e_k)
        smoothgrad_sq  values = mean_k A(x + e_k)**2
        vargrad        values = mean_k A(x + e_k)**2 - (mean_k A(x + e_k))**2

    where ``A`` is the ``base`` method: :class:`Saliency` (absolute
    gradients by default) or :class:`IntegratedGradients` (the path from
    each noisy copy to the unperturbed baseline). The same as captum's
    ``NoiseTunnel(Saliency(f))`` or ``NoiseTunnel(IntegratedGradients(f))``
    with ``nt_type``, ``nt_samples`` and ``stdevs``: with an int
    ``random_state``, the noise equals captum's under
    ``torch.manual_seed(random_state)`` (see Notes).

    Explains ``output``: a classifier's ``predict_proba`` column of the
    target class by default, its logit with ``output="logit"``; a
    regressor's prediction. Cost: ``nt_samples`` times the base method's
    (one forward and backward pass per noisy copy for saliency,
    ``n_steps`` for integrated gradients).

    Parameters
    ----------
    estimator : fitted estimator of sklears_neural, or Pipeline ending in one
    base : {"saliency", "integrated_gradients"}, Saliency or \
IntegratedGradients, default="saliency"
        The averaged method. A name uses its default settings; an instance
        its own settings (``abs``; ``n_steps``, ``method``, ``baselines``,
        ``multiply_by_inputs``), but this explainer's estimator, output and
        batch size.
    nt_type : {"smoothgrad", "smoothgrad_sq", "vargrad"}, default="smoothgrad"
        How the noisy attributions are combined (captum's names).
    nt_samples : int, default=50
        Noisy copies per sample.
    stdevs : float or array-like, default=0.15
        Standard deviation of the Gaussian noise, in the units of ``X``
        (captum's meaning: absolute, not a fraction of the range), or one
        per feature (anything that broadcasts to one sample). Smilkov et al.
        recommend 10-20% of the range ``max(X) - min(X)``: scale it to your
        data, e.g. ``stdevs=0.15 * (X.max() - X.min())``.
    random_state : int, RandomState instance or None, default=None
        Seeds the noise (a torch generator). An int is the torch seed
        itself; a RandomState or None draws one.
    output : {"auto", "probability", "logit"}, default="auto"
        ``"auto"``: probabilities for classifiers, predictions for regressors.
    batch_size : int or "auto", default="auto"
        Model inputs per forward/backward pass; the noisy copies (and the
        path points of integrated gradients) are built a pass at a time.

    Notes
    -----
    The noise of row ``i`` is the ``i``-th block of ``nt_samples`` draws of
    ``torch.randn((nt_samples, *sample_shape), dtype=torch.float32)`` from a
    generator seeded with ``random_state``, times ``stdevs``: it does not
    depend on ``batch_size``. captum draws the whole batch's noise at once;
    torch fills normal draws in blocks of 16, so the two agree exactly for
    one sample, or when ``nt_samples * values per sample`` is a multiple of
    16 (e.g. 8 copies of 4 features; any number of 8x8 images), and are
    other, equally distributed draws otherwise.

    With ``base="integrated_gradients"`` and ``nt_type="smoothgrad"`` the
    :class:`Explanation` holds ``base_values`` (``f_t(b)``) and
    ``convergence_delta`` (the mean over the noisy copies of each copy's
    completeness gap).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.explain import SmoothGrad
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPClassifier(max_iter=300, random_state=0).fit(X, y)
    >>> sg = SmoothGrad(model, nt_samples=20, stdevs=0.3, random_state=0)
    >>> sg.explain(X[:5]).values.shape
    (5, 4)
    """

    _parameter_constraints: dict = {
        **GradientExplainer._parameter_constraints,
        "base": [StrOptions({"saliency", "integrated_gradients"}), Saliency,
                 IntegratedGradients],
        "nt_type": [StrOptions({"smoothgrad", "smoothgrad_sq", "vargrad"})],
        "nt_samples": [Interval(Integral, 1, None, closed="left")],
        "stdevs": [Interval(Real, 0, None, closed="left"), "array-like"],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator, *, base="saliency", nt_type="smoothgrad", nt_samples=50,
                 stdevs=0.15, random_state=None, output="auto", batch_size="auto"):
        self.estimator = estimator
        self.base = base
        self.nt_type = nt_type
        self.nt_samples = nt_samples
        self.stdevs = stdevs
        self.random_state = random_state
        self.output = output
        self.batch_size = batch_size

    def _base_method(self):
        if isinstance(self.base, str):
            return {"saliency": Saliency, "integrated_gradients": IntegratedGradients}[
                self.base](self.estimator)
        self.base._validate_params()
        if isinstance(self.base, IntegratedGradients):
            self.base._check_steps()
        return self.base

    def _explain(self, X, target):
        self._base_method()  # its settings fail here, before any work
        return super()._explain(X, target)

    def _model(self):
        random_state = self.random_state
        if isinstance(random_state, Integral):
            seed = int(random_state)
        else:
            seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        return _NoiseModel(self.estimator, self.output, method=type(self).__name__,
                           seed=seed)

    def _inputs_per_row(self):
        return self.nt_samples * self._base_method()._inputs_per_row()

    def _attribute(self, model, x, targets, lengths, rows):
        base = self._base_method()
        sample_shape = tuple(x.shape[1:])
        stdevs = model.tensor(_noise_scale(self.stdevs, sample_shape))
        if isinstance(base, IntegratedGradients):
            baseline = base._baselines(model, x, rows)
        max_inputs = _inputs_per_pass(self.batch_size, x)
        n = self.nt_samples
        # Rows in groups whose noisy copies fill about one pass: memory holds
        # one group's copies, never the whole batch's.
        group = max(1, max_inputs // (n * base._inputs_per_row()))
        values, extras = [], []
        for start in range(0, len(x), group):
            part = slice(start, start + group)
            k = len(x[part])
            noisy = x[part].repeat_interleave(n, dim=0)
            noisy = noisy + stdevs * model.noise(k, n, sample_shape, rows.start + start)
            repeated_targets = targets[part].repeat_interleave(n)
            repeated_lengths = (None if lengths is None
                                else np.repeat(np.asarray(lengths)[part], n))
            if isinstance(base, IntegratedGradients):
                b = baseline if baseline.dim() == x.dim() - 1 else (
                    baseline[part].repeat_interleave(n, dim=0))
                attributions, part_extras = base._integrate(
                    model, noisy, b, repeated_targets, repeated_lengths, max_inputs)
            else:
                attributions = _gradients(model, noisy, repeated_targets, repeated_lengths,
                                          max_inputs)
                attributions = attributions.abs() if base.abs else attributions
                part_extras = {}
            values.append(self._combine(attributions.view(k, n, *sample_shape)))
            extras.append({name: np.asarray(v).reshape(k, n).mean(axis=1)
                           for name, v in part_extras.items()})
        merged = {name: np.concatenate([e[name] for e in extras]) for name in extras[0]}
        if self.nt_type != "smoothgrad":
            merged.pop("convergence_delta", None)  # a gap of squares means nothing
        return torch.cat(values), merged

    def _combine(self, attributions):
        """``(rows, nt_samples, ...)`` noisy attributions to one per row."""
        mean = attributions.mean(dim=1)
        if self.nt_type == "smoothgrad":
            return mean
        mean_square = (attributions ** 2).mean(dim=1)
        return mean_square if self.nt_type == "smoothgrad_sq" else mean_square - mean ** 2


# -- guided backpropagation -------------------------------------------------------


def _rectify_gradient(module, grad_input, grad_output):
    # Guided backprop: the activation's own gradient, then only its positive part.
    return tuple(None if g is None else g.clamp(min=0) for g in grad_input)


class _GuidedModel(TorchModel):
    """A :class:`TorchModel` whose network is hooked for guided backprop.

    The network is the model's own float64 copy, private to one ``explain``
    call: the hooks never reach the estimator's module.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.guided = self.module
        hooked = [m for m in self.guided.modules() if isinstance(m, RELU_FAMILY)]
        if not hooked:
            layers = sorted({type(m).__name__ for m in self.module.modules()
                             if not list(m.children())})
            raise TypeError(
                f"GuidedBackprop rectifies the backward pass of ReLU-family activation "
                f"modules ({', '.join(c.__name__ for c in RELU_FAMILY[:4])}, ...), and "
                f"{type(self.module).__name__} has none (its layers: "
                f"{', '.join(layers)}): it would return the plain gradient. Use "
                "Saliency(abs=False) for the gradient, or IntegratedGradients."
            )
        for module in hooked:
            module.register_full_backward_hook(_rectify_gradient)


class GuidedBackprop(GradientExplainer):
    """Guided backpropagation: the gradient, rectified at every ReLU-family activation.

    The backward pass runs as usual, except that at each ReLU-family
    activation module (ReLU, LeakyReLU, PReLU, ELU, GELU, SiLU, ...) the
    gradient passed back to its input is clipped to its positive part:
    ``g_in = max(0, act'(z) * g_out)`` (Springenberg et al., 2015). The
    result, ``values = d~ f_t / d x``, highlights the input patterns that
    increase the output. Signed; the same as ``captum.attr.GuidedBackprop``
    on ReLU networks (captum hooks ``nn.ReLU`` only).

    Explains ``output``: a classifier's ``predict_proba`` column of the
    target class by default, its logit with ``output="logit"``; a
    regressor's prediction. Cost: one forward and one backward pass per
    sample, on a hooked copy of the network (the estimator is not touched).

    Activations written as functions inside a module's ``forward``
    (``F.relu``) are not modules and keep their plain gradient. A network
    without ReLU-family modules (a Tanh MLP, an LSTM) raises a TypeError:
    there guided backprop would silently be the plain gradient.

    Parameters
    ----------
    estimator : fitted estimator of sklears_neural, or Pipeline ending in one
    output : {"auto", "probability", "logit"}, default="auto"
        ``"auto"``: probabilities for classifiers, predictions for regressors.
    batch_size : int or "auto", default="auto"
        Samples per forward/backward pass.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.explain import GuidedBackprop
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPClassifier(max_iter=300, random_state=0).fit(X, y)
    >>> GuidedBackprop(model).explain(X[:5]).values.shape
    (5, 4)
    """

    def __init__(self, estimator, *, output="auto", batch_size="auto"):
        self.estimator = estimator
        self.output = output
        self.batch_size = batch_size

    def _model(self):
        return _GuidedModel(self.estimator, self.output, method=type(self).__name__)

    def _attribute(self, model, x, targets, lengths, rows):
        grads, _ = model.gradient(x, targets, lengths, module=model.guided)
        return grads

