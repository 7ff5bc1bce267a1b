"""What every explainer shares: settings, targets, batching, the Explanation."""

import sys
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state
from sklears_neural.core._compat import HasMethods, Interval, StrOptions

from sklears_neural.explain._explanation import Explanation
from sklears_neural.explain._model import OUTPUTS, TorchModel, resolve_targets

__all__ = ["Explainer", "GradientExplainer", "Progress", "batch_rows", "parallel_map",
           "seed_sequence"]

#: Input values per model call when ``batch_size="auto"``: 2**20 float64
#: values (8 MiB of input; activations are some multiple of it).
AUTO_BATCH_VALUES = 2**20


def batch_rows(batch_size, values_per_row):
    """Model inputs per call: ``batch_size``, or what fits :data:`AUTO_BATCH_VALUES`."""
    if batch_size == "auto":
        return int(max(1, min(4096, AUTO_BATCH_VALUES // max(1, values_per_row))))
    return int(batch_size)


class Explainer(BaseEstimator):
    """Base class of the explainers: ``Explainer(estimator, **settings).explain(X)``.

    Explainers are scikit-learn style objects: their settings are the
    constructor's parameters (``get_params``, ``set_params``, ``clone`` and
    ``repr`` work), checked when :meth:`explain` runs, with scikit-learn's
    messages. The estimator must be fitted; the explainer never changes it.
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["predict"])],
        "output": [StrOptions(set(OUTPUTS))],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    }

    def __sklearn_clone__(self):
        # clone() would clone the estimator too, which unfits it: an explainer
        # explains *this* fitted model, so the copy shares it (as it shares a
        # model's weights) and clones only its own settings.
        params = self.get_params(deep=False)
        estimator = params.pop("estimator")
        return type(self)(estimator, **clone(params, safe=False))

    def explain(self, X, target=None):
        """Explain the estimator's outputs at the samples ``X``.

        Parameters
        ----------
        X : array-like
            Samples in the layout the estimator takes (rows, images,
            sequences; a pipeline's raw input). pandas column names become
            ``feature_names``.
        target : None, "all", class label, int, or array-like, default=None
            Which output to explain: for a classifier a class label (None:
            each sample's predicted class); for a regressor an output index
            (None: its only output, or all of them). ``"all"`` explains every
            output (``values`` gets a last axis of outputs). An array gives
            one target per sample.

        Returns
        -------
        Explanation
        """
        self._validate_params()
        return self._explain(X, target)

    def _explain(self, X, target):
        raise NotImplementedError


class GradientExplainer(Explainer):
    """Base of the methods that differentiate one of our networks.

    Subclasses implement :meth:`_attribute`: the attributions of one batch
    of explained inputs for given target indices.
    """

    _parameter_constraints: dict = {
        **Explainer._parameter_constraints,
        "estimator": [HasMethods(["fit", "predict"])],
    }

    def _model(self):
        return TorchModel(self.estimator, self.output, method=type(self).__name__)

    def _explain(self, X, target):
        model = self._model()
        x, lengths, names = model.prepare(X)
        # batch_size counts model inputs per forward/backward pass: a batch
        # holds as many rows as their inputs (IG's steps, SmoothGrad's noisy
        # copies) fill; a method splits a row's inputs over several passes
        # when one row alone is more.
        per_pass = batch_rows(self.batch_size, int(np.prod(x.shape[1:])))
        rows = max(1, per_pass // self._inputs_per_row())
        outputs = model.predict(x, lengths, per_pass)
        targets = resolve_targets(target, outputs, model.output_names, model.classifier)
        per_output = [targets] if targets is not None else [
            np.full(len(x), k, dtype=np.intp) for k in range(outputs.shape[1])
        ]
        results = []
        for chosen in per_output:
            parts = []
            for start in range(0, len(x), rows):
                batch = slice(start, start + rows)
                part_lengths = None if lengths is None else lengths[batch]
                parts.append(self._attribute(
                    model, model.tensor(x[batch]),
                    torch.as_tensor(chosen[batch], device=model.device), part_lengths,
                    batch,
                ))
            results.append(_merge(parts))
        values, extras = _stack_outputs(results, all_outputs=targets is None)
        values = _zero_padding(values, lengths)
        base_values = extras.pop("base_values", None)
        if model.image_shape is not None and model.layout == "tabular":
            extras["image_shape"] = model.image_shape
        return Explanation(
            values, base_values=base_values, data=x, feature_names=names, output_names=model.output_names,
            targets=targets, output=model.output, method=type(self).__name__,
            lengths=lengths, feature_shape=x.shape[1:], layout=model.layout, **extras,
        )

    def _inputs_per_row(self):
        """Model inputs evaluated per explained row (IG: its steps)."""
        return 1

    def _attribute(self, model, x, targets, lengths, rows):
        """Attributions of a batch: a tensor like ``x``, or ``(tensor, extras)``.

        ``x`` holds the rows ``rows`` (a slice) of the explained input, in
        order; a batch of every row comes once per explained output.

        ``extras`` is a dict of per-row arrays (``base_values``,
        ``convergence_delta``) that are concatenated over batches.
        """
        raise NotImplementedError


def _merge(parts):
    """Concatenate per-batch ``(values, extras)`` results."""
    values = np.concatenate([_values(part).cpu().numpy() for part in parts])
    extras = {}
    for name in _extras(parts[0]):
        extras[name] = np.concatenate([np.asarray(_extras(part)[name]) for part in parts])
    return values, extras


def _values(part):
    return part[0] if isinstance(part, tuple) else part


def _extras(part):
    return part[1] if isinstance(part, tuple) else {}


def _stack_outputs(results, all_outputs):
    """One output's values and extras, or all outputs' stacked on a last axis."""
    if not all_outputs:
        return results[0]
    values = np.stack([values for values, _ in results], axis=-1)
    extras = {
        name: np.stack([extras[name] for _, extras in results], axis=-1)
        for name in results[0][1]
    }
    return values, extras


def _zero_padding(values, lengths):
    """Exact zeros beyond each padded sequence's length."""
    if lengths is None:
        return values
    steps = np.arange(values.shape[1])
    mask = steps[None, :] < np.asarray(lengths)[:, None]
    return values * mask.reshape(mask.shape + (1,) * (values.ndim - 2))


# -- shared by the sampling explainers (KernelSHAP, LIME, TCAV) ---------------------


def seed_sequence(random_state):
    """A :class:`numpy.random.SeedSequence` from a scikit-learn ``random_state``.

    An int seeds it directly (equal ints, equal draws); None and a
    ``RandomState`` draw its seed from numpy's generator, as scikit-learn does.
    """
    if isinstance(random_state, (Integral, np.integer)):
        return np.random.SeedSequence(int(random_state))
    return np.random.SeedSequence(
        int(check_random_state(random_state).randint(np.iinfo(np.int32).max)))


class Progress:
    """A tqdm bar on stderr when ``verbose``, a no-op otherwise.

    Drawn even when stderr is not a terminal, like the estimators'
    :class:`~sklears_neural.callbacks.ProgressBar`: the caller asked for it.
    """

    def __init__(self, verbose, total, desc, unit):
        self._bar = None
        if verbose:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                             disable=False, dynamic_ncols=True, leave=True)

    def update(self, n=1):
        if self._bar is not None:
            self._bar.update(n)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parallel_map(function, items, n_jobs, progress, weight=lambda item: 1):
    """``[function(item) for item in items]``, over ``n_jobs`` threads.

    Threads, not processes: the work is model calls into NumPy or torch,
    which release the GIL, and threads share the estimator and the
    synthetic rows without pickling them. Results keep the items' order, so
    they do not depend on ``n_jobs``.
    """
    items = list(items)
    if n_jobs is None or n_jobs == 1 or len(items) <= 1:
        results = []
        for item in items:
            results.append(function(item))
            progress.update(weight(item))
        return results
    from joblib import Parallel, delayed

    results = []
    parallel = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    for item, result in zip(items, parallel(delayed(function)(item) for item in items)):
        results.append(result)
        progress.update(weight(item))
    return results
