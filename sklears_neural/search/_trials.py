"""One trial (a candidate fitted and scored on one CV split), and how
trials are spread over joblib workers and accelerators.

Trials run in worker processes, so everything here is a module-level
function of picklable arguments.
"""

import pickle
import time
import traceback
import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

__all__ = ["count_parameters", "plan_devices", "split_into_chains", "run_trials"]

#: Rows of the test fold that the latency of ``predict`` is timed on.
LATENCY_ROWS = 64
#: Timed repeats of that call; the fastest counts (the others measure noise).
LATENCY_REPEATS = 3


def count_parameters(estimator):
    """Number of learned scalars of a fitted estimator.

    Reads a torch ``module_`` (our networks), else scikit-learn's
    ``coefs_``/``intercepts_``/``coef_``/``intercept_``; a pipeline sums
    its steps. NaN when none of these exist.
    """
    if hasattr(estimator, "steps"):
        counts = [count_parameters(step) for _, step in estimator.steps
                  if step not in (None, "passthrough")]
        counts = [c for c in counts if not np.isnan(c)]
        return float(sum(counts)) if counts else float("nan")
    module = getattr(estimator, "module_", None)
    if module is not None and hasattr(module, "parameters"):
        return float(sum(p.numel() for p in module.parameters()))
    total, found = 0, False
    for name in ("coefs_", "intercepts_", "coef_", "intercept_"):
        value = getattr(estimator, name, None)
        if value is None:
            continue
        found = True
        arrays = value if isinstance(value, (list, tuple)) else [value]
        total += sum(np.size(a) for a in arrays)
    return float(total) if found else float("nan")


def count_epochs(estimator):
    """Epochs trained so far: ``len(history_)`` (it spans warm fits), else
    ``n_iter_``; NaN for estimators without either."""
    history = getattr(estimator, "history_", None)
    if isinstance(history, list):
        return float(len(history))
    n_iter = getattr(estimator, "n_iter_", None)
    if n_iter is None:
        return float("nan")
    return float(np.max(n_iter))


def _take(data, indices):
    """Rows ``indices`` of arrays, sparse matrices, DataFrames or lists."""
    if data is None:
        return None
    if hasattr(data, "iloc"):
        return data.iloc[indices]
    if hasattr(data, "shape"):
        return data[indices]
    return [data[i] for i in indices]


def _fold_params(fit_params, n_samples, indices):
    """Fit parameters with one entry per sample are cut to the fold."""
    return {
        name: _take(value, indices)
        if hasattr(value, "__len__") and not isinstance(value, (str, dict))
        and len(value) == n_samples else value
        for name, value in fit_params.items()
    }


def _latency_ms(estimator, X_test):
    """Milliseconds of one ``predict`` on ``LATENCY_ROWS`` rows, best of a few."""
    method = next(
        (getattr(estimator, name) for name in ("predict", "transform", "score_samples")
         if hasattr(estimator, name)),
        None,
    )
    if method is None:
        return float("nan")
    n_rows = X_test.shape[0] if hasattr(X_test, "shape") else len(X_test)
    batch = _take(X_test, np.arange(min(LATENCY_ROWS, n_rows)))
    best = np.inf
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        method(batch)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best


def run_trial(estimator, X, y, train, test, params, scorers, fit_params, *,
              previous=None, continue_params=None, keep_estimator=False,
              error_score=np.nan, quiet=False):
    """Fit one candidate on ``train`` and score it on ``test``.

    Parameters
    ----------
    estimator : estimator
        The unfitted template, cloned unless ``previous`` is given.
    params : dict
        Parameters to set (the candidate's, its budget, its device).
    previous : estimator or None
        A fitted estimator from the previous rung to continue training
        (``continue_params`` is then set on it instead of ``params``).
    keep_estimator : bool
        Return the fitted estimator, for a later rung to continue.
    error_score : "raise" or float
        Score recorded when the fit or the scoring fails.
    quiet : bool
        Hide ``ConvergenceWarning``: a rung below the full budget stops
        training on purpose.

    Returns
    -------
    dict
        ``scores`` (metric -> float), ``fit_time``, ``score_time``,
        ``n_params``, ``latency_ms``, ``n_epochs``, ``error`` (None or the
        traceback), and ``estimator`` (None unless kept).
    """
    if previous is not None:
        model = previous.set_params(**continue_params)
    else:
        model = clone(estimator).set_params(**params)
    n_samples = X.shape[0] if hasattr(X, "shape") else len(X)
    X_train, y_train = _take(X, train), _take(y, train)
    X_test, y_test = _take(X, test), _take(y, test)
    out = {"error": None, "estimator": None, "score_time": 0.0, "latency_ms": float("nan")}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train, y_train, **_fold_params(fit_params, n_samples, train))
        out["fit_time"] = time.perf_counter() - start
        start = time.perf_counter()
        out["scores"] = {
            name: float(scorer(model, X_test, y_test)) for name, scorer in scorers.items()
        }
        out["score_time"] = time.perf_counter() - start
        out["latency_ms"] = _latency_ms(model, X_test)
    except Exception as error:
        if error_score == "raise":
            raise
        out.setdefault("fit_time", time.perf_counter() - start)
        out["scores"] = {name: float(error_score) for name in scorers}
        out["error"] = traceback.format_exc()
        out["exception"] = _picklable(error)
    out["n_params"] = count_parameters(model) if out["error"] is None else float("nan")
    out["n_epochs"] = count_epochs(model) if out["error"] is None else float("nan")
    if keep_estimator and out["error"] is None:
        out["estimator"] = model
    return out


def _picklable(error):
    """``error`` if it survives the trip back from a worker, else None."""
    try:
        pickle.dumps(error)
    except Exception:
        return None
    return error


def plan_devices(device, n_jobs, device_count):
    """The accelerator each worker owns, or None to run trials as usual.

    Parameters
    ----------
    device : str, torch.device or None
        The searched estimator's ``device`` parameter.
    n_jobs : int or None
        The search's ``n_jobs`` (-1: one worker per device).
    device_count : int
        CUDA devices on this machine (``torch.cuda.device_count()``).

    Returns
    -------
    list of str or None
        One ``"cuda:<i>"`` per worker, never one device twice, so no card
        trains two trials at once; None when the estimator does not train
        on CUDA. An explicit ``"cuda:<i>"`` is one worker on that device.

    Examples
    --------
    >>> plan_devices("cuda", n_jobs=4, device_count=2)
    ['cuda:0', 'cuda:1']
    >>> plan_devices("cuda", n_jobs=None, device_count=2)
    ['cuda:0']
    >>> plan_devices("cuda:1", n_jobs=4, device_count=2)
    ['cuda:1']
    >>> print(plan_devices("cpu", n_jobs=4, device_count=2))
    None
    """
    if device is None:
        return None
    name = str(device)
    if name == "auto":
        name = "cuda" if device_count > 0 else "cpu"
    kind, _, index = name.partition(":")
    if kind != "cuda" or device_count < 1:
        return None
    if index:
        return [name]
    workers = 1 if n_jobs is None else (device_count if n_jobs < 0 else int(n_jobs))
    return [f"cuda:{i}" for i in range(max(1, min(workers, device_count)))]


def split_into_chains(n_tasks, n_chains):
    """Task numbers dealt round-robin into ``n_chains`` lists.

    Each chain runs in one worker, one task after another, on the device
    of that worker: a device never runs two trials at once, whatever order
    the tasks finish in.

    Examples
    --------
    >>> split_into_chains(5, 2)
    [[0, 2, 4], [1, 3]]
    """
    return [list(range(start, n_tasks, n_chains)) for start in range(n_chains)]


def _on_device(kwargs, device):
    """Trial keyword arguments with ``device`` set on the estimator."""
    kwargs = dict(kwargs)
    for key in ("params", "continue_params"):
        if kwargs.get(key) is not None:
            kwargs[key] = {**kwargs[key], "device": device}
    return kwargs


def _run_chain(tasks, device):
    return [run_trial(*args, **_on_device(kwargs, device)) for args, kwargs in tasks]


def run_trials(tasks, *, n_jobs=None, pre_dispatch="2*n_jobs", devices=None):
    """Run ``(args, kwargs)`` trial tasks; results in task order.

    With ``devices``, each device gets one worker and a chain of tasks
    (:func:`split_into_chains`); otherwise joblib hands tasks out freely.
    """
    if devices:
        chains = split_into_chains(len(tasks), len(devices))
        done = Parallel(n_jobs=len(devices))(
            delayed(_run_chain)([tasks[i] for i in chain], device)
            for chain, device in zip(chains, devices)
        )
        results = [None] * len(tasks)
        for chain, outs in zip(chains, done):
            for i, out in zip(chain, outs):
                results[i] = out
        return results
    return Parallel(n_jobs=n_jobs, pre_dispatch=pre_dispatch)(
        delayed(run_trial)(*args, **kwargs) for args, kwargs in tasks
    )

