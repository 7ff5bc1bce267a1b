"""Testing with Concept Activation Vectors (TCAV, Kim et al., 2018).

A *concept* is given by examples (inputs showing it). At a chosen layer of
the network, a linear classifier separates the concept's activations from
those of random examples; the unit normal of its decision boundary, pointing
to the concept, is the concept activation vector (CAV). The TCAV score of a
concept for an output is the fraction of explained inputs whose output
grows when their activation moves along the CAV. Whether a score means
anything is tested against CAVs of random example sets.
"""

import hashlib
import os
import warnings
import zlib
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from sklearn.utils import check_random_state

from sklears_neural.core._compat import HasMethods, Interval, StrOptions
from sklears_neural.explain._base import Explainer, batch_rows
from sklears_neural.explain._explanation import Explanation
from sklears_neural.explain._model import (
    TorchModel,
    cudnn_rnn_backward,
    resolve_targets,
    split_pipeline,
)

__all__ = ["TCAV"]

#: Version of the cache key's recipe: a change of how CAVs are trained
#: changes it, so files written by an older recipe are not read back.
_CACHE_VERSION = "tcav-1"


class TCAV(Explainer):
    """Concept sensitivity of a network's output: TCAV scores and their significance.

    For each concept :math:`C` and each run :math:`i = 1 .. n_{random}`, a
    linear classifier (``classifier``) is fitted to separate the activations
    :math:`h_l(x)` at ``layer`` of ``n_examples`` of the concept's examples
    from those of a random set :math:`R_i` of as many random examples; its
    unit weight vector :math:`v_{C,i}` (pointing to the concept) is the CAV.
    For each explained input :math:`x` and its target output :math:`f_k`,
    the conceptual sensitivity is the directional derivative

    .. math::

        S_{C,i,k}(x) = \\nabla_{h_l} f_k(x) \\cdot v_{C,i},

    and the TCAV score is the fraction of explained inputs where it is
    positive:

    .. math::

        \\mathrm{TCAV}_{C,i,k} = |\\{x \\in X : S_{C,i,k}(x) > 0\\}| / |X|.

    ``values`` holds the mean score over the ``n_random`` runs.

    A CAV always exists, even for a concept the network ignores, so the
    scores are compared with those of random CAVs, each separating a random
    set from :math:`R_i` (a disjoint one): a two-sided t-test
    (:func:`scipy.stats.ttest_ind`) of the ``n_random`` concept scores
    against the ``n_random`` random scores gives ``p_values``; a concept is
    ``significant`` when ``p < significance_level``.

    Each run draws its own subset of the concept's examples. With the same
    examples in every run, a concept's CAVs would share the examples'
    quirks and its scores would vary less than the random scores do, and
    sets of random examples would pass the t-test as concepts far too often
    (measured on an MLP with 20 runs: 38% at ``significance_level=0.05``
    with all 60 examples in every run, 19% with half of them). With a fifth
    per run (``n_examples="auto"``) it was 5%, the nominal rate.

    Explains ``output``: a classifier's ``predict_proba`` column of the
    target class by default (its logit with ``output="logit"``), a
    regressor's prediction.

    CAVs are cached on the explainer (and in ``cache_dir`` if given): a
    later :meth:`explain` with the same layer, concept examples, random
    examples, classifier settings and fitted weights reuses them, so only
    the gradients at the new ``X`` are computed.

    Parameters
    ----------
    estimator : fitted estimator of sklears_neural, or Pipeline ending in one
        Preprocessing steps must be affine (scalers, PCA) to be
        differentiated through.
    layer : str
        Name of the submodule of the fitted network whose output is the
        activation space, as in ``dict(estimator.module_.named_modules())``
        (``"layers.1"``: the first hidden ReLU of an MLP). Its output must
        be a tensor (or a tuple starting with one) whose shape per sample
        is the same for all inputs.
    concepts : dict of str to array-like
        Concept name to its examples, in the layout the estimator takes
        (rows, images, sequences), at least 2 per concept.
    random_examples : array-like or None, default=None
        A pool of random (counter-)examples in the same layout, at least 4:
        each run draws two disjoint sets of ``n_examples`` from it. Inputs
        from the data that do not show the concepts are best. None draws a
        pool of twice the largest concept's size from a Gaussian with the
        per-value mean and standard deviation of the explained ``X``: CAVs
        then depend on ``X`` (and are retrained for another ``X``).
    n_random : int, default=10
        Runs: random sets each concept is tested against, and random CAVs
        its scores are compared with. At least 2 (the t-test needs them);
        more runs give the test more power.
    n_examples : int or "auto", default="auto"
        Examples of each set (concept, random) per run, drawn anew in each
        run. ``"auto"``: a fifth of ``m``, at least ``min(5, m)``, where
        ``m`` is the smaller of the smallest concept and half the random
        pool. At most ``m``.
    classifier : {"sgd", "logistic"}, default="sgd"
        The linear classifier of the CAV: scikit-learn's ``SGDClassifier``
        (hinge loss, as the TCAV paper and captum) or ``LogisticRegression``;
        both with balanced class weights.
    alpha : float, default=0.01
        L2 penalty of the classifier, scikit-learn's meaning: ``alpha`` of
        ``SGDClassifier``, ``C = 1 / (alpha * n)`` (``n`` examples) for
        ``LogisticRegression`` (the same penalty on the mean loss).
    significance_level : float, default=0.05
        ``significant`` marks concepts with ``p < significance_level``.
    cache : bool, default=True
        Keep the trained CAVs on the explainer (and in ``cache_dir``) and
        reuse them.
    cache_dir : str, path or None, default=None
        A folder where CAVs are also stored, one ``.npy`` file each
        (``numpy.save`` without pickle), so that other processes reuse them.
    random_state : int, RandomState or None, default=None
        Seeds the random sets' draws and the classifiers. None: a seed is
        drawn once per explainer, so its runs share CAVs.
    output : {"auto", "probability", "logit"}, default="auto"
        ``"auto"``: probabilities for classifiers, predictions for regressors.
    batch_size : int or "auto", default="auto"
        Samples per forward/backward pass; ``"auto"`` keeps a pass near
        2**20 input values.
    verbose : int, default=0
        ``>= 1``: a progress bar (tqdm, on stderr) over the CAVs trained.

    Notes
    -----
    Cost: one forward pass over each concept's examples and the random pool
    (only when a CAV must be trained), ``(n_concepts + 1) * n_random``
    linear fits on ``2 * n_examples`` activation vectors (none when cached),
    and one forward and backward pass per explained input and target
    output.

    ``explain(X, target)`` returns an :class:`Explanation` with

    - ``values``: ``(1, n_concepts)`` mean TCAV scores (``(1, n_concepts,
      n_outputs)`` with ``target="all"``); ``feature_names``: the concept
      names;
    - ``p_values`` ``(n_concepts,)``, ``significant`` (bool), ``scores``
      ``(n_concepts, n_random)`` per run, ``random_scores`` ``(n_random,)``
      (each with a last outputs axis with ``target="all"``);
    - ``cavs`` ``(n_concepts, n_random, n_activations)``, ``random_cavs``
      ``(n_random, n_activations)``, ``cav_accuracy`` ``(n_concepts,
      n_random)`` (training accuracy of each concept's classifier);
    - ``cavs_trained`` and ``cavs_reused``: CAVs fitted by this call and
      taken from the cache; ``sample_targets``: the output explained at
      each input.

    The default target is each input's predicted class, so the score mixes
    classes; TCAV's question is usually about one class: pass
    ``target=label`` with inputs ``X`` of that class.

    References
    ----------
    Kim, B. et al. (2018). Interpretability beyond feature attribution:
    quantitative testing with concept activation vectors (TCAV). ICML.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.explain import TCAV
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(300, 4))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> model = MLPClassifier((16,), max_iter=300, random_state=0).fit(X, y)
    >>> tcav = TCAV(model, layer="layers.1", random_state=0,
    ...             concepts={"x0 up": X[:50] + [2.0, 0, 0, 0]},
    ...             random_examples=rng.normal(size=(200, 4)))
    >>> expl = tcav.explain(X[y == 1], target=1)
    >>> expl.feature_names, expl.values.round(2), bool(expl.p_values[0] < 0.05)
    (['x0 up'], array([[1.]]), True)
    """

    _parameter_constraints: dict = {
        **Explainer._parameter_constraints,
        "estimator": [HasMethods(["fit", "predict"])],
        "layer": [str],
        "concepts": [dict],
        "random_examples": ["array-like", None],
        "n_random": [Interval(Integral, 2, None, closed="left")],
        "n_examples": [
            Interval(Integral, 2, None, closed="left"), StrOptions({"auto"})
        ],
        "classifier": [StrOptions({"sgd", "logistic"})],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "significance_level": [Interval(Real, 0, 1, closed="neither")],
        "cache": ["boolean"],
        "cache_dir": [str, os.PathLike, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator, *, layer, concepts, random_examples=None,
                 n_random=10, n_examples="auto", classifier="sgd", alpha=0.01,
                 significance_level=0.05, cache=True, cache_dir=None,
                 random_state=None, output="auto", batch_size="auto", verbose=0):
        self.estimator = estimator
        self.layer = layer
        self.concepts = concepts
        self.random_examples = random_examples
        self.n_random = n_random
        self.n_examples = n_examples
        self.classifier = classifier
        self.alpha = alpha
        self.significance_level = significance_level
        self.cache = cache
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.output = output
        self.batch_size = batch_size
        self.verbose = verbose

    # -- the method ----------------------------------------------------------

    def _explain(self, X, target):
        model = TorchModel(self.estimator, self.output, method="TCAV")
        submodule = _submodule(model.module, self.layer)
        x, lengths, _ = model.prepare(X)
        rows = batch_rows(self.batch_size, int(np.prod(x.shape[1:])))
        outputs = model.predict(x, lengths, rows)
        targets = resolve_targets(target, outputs, model.output_names, model.classifier)
        per_output = [targets] if targets is not None else [
            np.full(len(x), k, dtype=np.intp) for k in range(outputs.shape[1])
        ]
        names, concept_sets = self._concept_sets(model)
        seed = self._seed()
        pool = self._random_pool(model, x, concept_sets, seed)
        k = self._set_size([len(c[0]) for c in concept_sets], len(pool[0]))
        runs = _draw_runs(names, [len(c[0]) for c in concept_sets], len(pool[0]), k,
                          self.n_random, seed)
        tap = _Activations(model, submodule, self.layer, rows)
        trainer = _CavTrainer(self, tap, _fingerprint(model, self.estimator), seed)
        cavs, random_cavs, accuracy = trainer.train(names, concept_sets, pool, runs)

        # Directional derivatives of every explained input, per output.
        scores, random_scores = [], []
        for chosen in per_output:
            grads = tap.gradients(x, lengths, chosen)  # (n, n_activations)
            scores.append((np.einsum("nd,crd->crn", grads, cavs) > 0).mean(axis=-1))
            random_scores.append((grads @ random_cavs.T > 0).mean(axis=0))
        scores = np.stack(scores, axis=-1)  # (n_concepts, n_random, n_targets)
        random_scores = np.stack(random_scores, axis=-1)  # (n_random, n_targets)
        p_values = np.array([[_t_test(scores[c, :, j], random_scores[:, j])
                              for j in range(scores.shape[-1])]
                             for c in range(len(names))])
        values = scores.mean(axis=1)[None]  # (1, n_concepts, n_targets)
        if targets is not None:  # one explained output per input
            values, scores, random_scores, p_values = (
                values[..., 0], scores[..., 0], random_scores[..., 0], p_values[..., 0])
        single = targets is not None and len(np.unique(targets)) == 1
        return Explanation(
            values, feature_names=names, output_names=model.output_names,
            targets=targets[:1] if single else None, output=model.output,
            method="TCAV", feature_shape=(len(names),), layout="tabular",
            p_values=p_values, significant=p_values < self.significance_level,
            scores=scores, random_scores=random_scores, cavs=cavs,
            random_cavs=random_cavs, cav_accuracy=accuracy, layer=self.layer,
            cavs_trained=trainer.trained, cavs_reused=trainer.reused,
            sample_targets=targets,
        )

    # -- inputs --------------------------------------------------------------

    def _concept_sets(self, model):
        """Concept names and ``(x, lengths, digest)`` of each concept's examples."""
        if not self.concepts:
            raise ValueError(
                "concepts is empty: pass a dict of concept name to an array of its "
                "examples, e.g. concepts={'striped': X_striped}."
            )
        names, sets = [], []
        for name, examples in self.concepts.items():
            if not isinstance(name, str):
                raise TypeError(
                    "Concept names must be strings (they become feature_names); got "
                    f"{name!r} of type {type(name).__name__}."
                )
            xc, lc, _ = model.prepare(examples)
            if len(xc) < 2:
                raise ValueError(
                    f"Concept {name!r} has {len(xc)} example(s); a CAV needs at "
                    "least 2 (tens are usual)."
                )
            names.append(name)
            sets.append((xc, lc, _digest(xc, lc)))
        return names, sets

    def _random_pool(self, model, x, concept_sets, seed):
        """``(x, lengths)`` of the random pool: given, or Gaussian like ``X``."""
        if self.random_examples is not None:
            xr, lr, _ = model.prepare(self.random_examples)
            if len(xr) < 4:
                raise ValueError(
                    f"random_examples has {len(xr)} example(s); each run draws two "
                    "disjoint random sets of at least 2, so pass at least 4 (hundreds "
                    "are usual), or None to draw them."
                )
            return xr, lr
        size = 2 * max(2, max(len(c[0]) for c in concept_sets))
        mean = x.mean(axis=0)
        scale = x.std(axis=0) if len(x) > 1 else np.ones_like(mean)
        scale = np.where(scale > 0, scale, 1.0)
        rng = np.random.RandomState(seed)
        return mean + scale * rng.standard_normal((size, *x.shape[1:])), None

    def _set_size(self, concept_sizes, pool_size):
        """Examples per set and run: ``n_examples``, or a fifth of the smallest set."""
        largest = min(min(concept_sizes), pool_size // 2)
        if self.n_examples == "auto":
            return max(min(5, largest), largest // 5)
        if self.n_examples > largest:
            raise ValueError(
                f"n_examples={self.n_examples} is more than the smallest set "
                f"allows: {min(concept_sizes)} examples in the smallest concept and "
                f"half of the {pool_size} random examples. Pass n_examples <= "
                f"{largest}, or 'auto'."
            )
        return int(self.n_examples)

    def _seed(self):
        """An int seed: from ``random_state``, or drawn once for this explainer."""
        if self.random_state is None:
            if "_drawn_seed" not in self.__dict__:
                self._drawn_seed = int(np.random.randint(2**31 - 1))
            return self._drawn_seed
        return int(check_random_state(self.random_state).randint(2**31 - 1))


# -- activations and their gradients -------------------------------------------------


def _submodule(module, layer):
    modules = dict(module.named_modules())
    if layer in modules and layer != "":
        return modules[layer]
    names = [name for name in modules if name]
    shown = ", ".join(repr(name) for name in names[:40])
    more = f" and {len(names) - 40} more" if len(names) > 40 else ""
    raise ValueError(
        f"layer={layer!r} is not a submodule of the fitted {type(module).__name__}; "
        f"its submodules are {shown}{more} (names from "
        "dict(estimator.module_.named_modules()))."
    )


def _first_tensor(output, layer):
    """The tensor of a layer's output, and how to put a replacement back."""
    if isinstance(output, torch.Tensor):
        return output, lambda tensor: tensor
    sequence = isinstance(output, (tuple, list)) and output
    if sequence and isinstance(output[0], torch.Tensor):
        return output[0], lambda tensor: type(output)((tensor, *output[1:]))
    inner = output[0] if isinstance(output, (tuple, list)) and output else output
    raise TypeError(
        f"layer={layer!r} outputs {type(output).__name__}"
        + (f" starting with {type(inner).__name__}" if inner is not output else "")
        + ", not a tensor (recurrent torch layers output packed sequences inside the "
        "network): choose a layer whose output is a tensor, such as the pooled "
        "vector ('dropout' of an RNN) or a layer after it."
    )


class _Activations:
    """Activations at one layer, and gradients of the explained output there."""

    def __init__(self, model, submodule, layer, rows):
        self.model = model
        self.submodule = submodule
        self.layer = layer
        self.rows = rows
        self.width = None

    def _run(self, x, lengths, targets=None):
        """Flat activations ``(n, d)``; with ``targets``, d f_target / d activation."""
        model = self.model
        captured = {}

        def hook(module, inputs, output):
            tensor, rebuild = _first_tensor(output, self.layer)
            if targets is None:
                captured["value"] = tensor
                return None
            # A leaf in place of the activation: gradients stop there.
            leaf = tensor.detach().requires_grad_(True)
            captured["value"] = leaf
            return rebuild(leaf)

        parts = []
        handle = self.submodule.register_forward_hook(hook)
        try:
            for start in range(0, len(x), self.rows):
                batch = slice(start, start + self.rows)
                part_lengths = None if lengths is None else lengths[batch]
                xt = model.tensor(x[batch])
                if targets is None:
                    with torch.no_grad():
                        model.raw(xt, part_lengths)
                    part = captured["value"]
                else:
                    with torch.enable_grad(), cudnn_rnn_backward(model.device):
                        outputs = model(xt, part_lengths)
                        chosen = torch.as_tensor(targets[batch], device=outputs.device)
                        selected = outputs.gather(1, chosen.view(-1, 1)).sum()
                        part = None
                        if selected.requires_grad:
                            (part,) = torch.autograd.grad(selected, captured["value"],
                                                          allow_unused=True)
                    if part is None:
                        raise ValueError(
                            "The explained output does not depend on the output of "
                            f"layer={self.layer!r} (of its first tensor, for a layer "
                            "returning several): choose a layer on the path to the "
                            "output, such as the pooled vector ('dropout' of an RNN)."
                        )
                parts.append(part.detach().reshape(part.shape[0], -1).cpu().numpy())
        finally:
            handle.remove()
        values = np.concatenate(parts)
        self._check_width(values.shape[1])
        return values

    def _check_width(self, width):
        if self.width is None:
            self.width = width
        elif width != self.width:
            raise ValueError(
                f"The activations at layer={self.layer!r} have {self.width} values "
                f"per sample for some inputs and {width} for others: CAVs need one "
                "activation space. For sequences, give the concept examples, random "
                "examples and X the same number of steps, or choose a layer after "
                "the pooling."
            )

    def activations(self, x, lengths):
        return self._run(x, lengths)

    def gradients(self, x, lengths, targets):
        return self._run(x, lengths, targets)


# -- CAVs ---------------------------------------------------------------------------


def _draw_runs(names, concept_sizes, pool_size, k, n_random, seed):
    """Rows of each run: ``(concept rows per concept, negative rows, reference rows)``.

    Run ``i`` tests each concept (``k`` of its examples) against
    ``negative`` (``k`` rows of the random pool); its random CAV separates
    ``reference`` from ``negative`` (disjoint rows of the pool). Each
    concept's rows come from a stream of its own, so adding a concept
    leaves the others' draws (and their cached CAVs) as they were.
    """
    runs = []
    for i in range(n_random):
        order = np.random.default_rng([seed, i]).permutation(pool_size)
        concepts = [
            np.sort(np.random.default_rng([seed, i, zlib.crc32(name.encode())])
                    .choice(size, k, replace=False))
            for name, size in zip(names, concept_sizes)
        ]
        runs.append((concepts, np.sort(order[:k]), np.sort(order[k:2 * k])))
    return runs


class _CavTrainer:
    """Trains the CAVs a run needs, or takes them from the explainer's cache."""

    def __init__(self, explainer, tap, fingerprint, seed):
        self.explainer = explainer
        self.tap = tap
        self.fingerprint = fingerprint
        self.seed = seed
        self.memory = explainer.__dict__.setdefault("_cav_cache", {})
        self.folder = (Path(explainer.cache_dir)
                       if explainer.cache and explainer.cache_dir is not None else None)
        self.trained = 0
        self.reused = 0
        self._activations = {}

    def train(self, names, concept_sets, pool, runs):
        """``cavs (C, R, d)``, ``random_cavs (R, d)``, ``accuracy (C, R)``."""
        xr, lr = pool
        jobs = []
        for c, (name, (xc, lc, _)) in enumerate(zip(names, concept_sets)):
            for concept_rows, negative, _ in runs:
                rows = concept_rows[c]
                key = ("concept", name, _digest(*_rows(xc, lc, rows)),
                       _digest(*_rows(xr, lr, negative)))
                jobs.append((key, ("concept", name, xc, lc, rows), ("pool", negative)))
        for negative, reference in ((run[1], run[2]) for run in runs):
            key = ("random", _digest(*_rows(xr, lr, reference)),
                   _digest(*_rows(xr, lr, negative)))
            jobs.append((key, ("pool", reference), ("pool", negative)))
        results = [self._cav(key, positive, negative, pool)
                   for key, positive, negative in self._progress(jobs)]
        n_concepts, n_random = len(names), len(runs)
        cavs = np.array([cav for cav, _ in results[: n_concepts * n_random]])
        accuracy = np.array([acc for _, acc in results[: n_concepts * n_random]])
        random_cavs = np.array([cav for cav, _ in results[n_concepts * n_random:]])
        return (cavs.reshape(n_concepts, n_random, -1), random_cavs,
                accuracy.reshape(n_concepts, n_random))

    def _progress(self, jobs):
        if not self.explainer.verbose:
            return jobs
        from sklears_neural.core.callbacks import _import_tqdm

        return _import_tqdm()(jobs, desc="TCAV: CAVs", unit="cav")

    def _key(self, key):
        """Cache key: the run's identity, the layer, classifier settings, weights."""
        explainer = self.explainer
        parts = (_CACHE_VERSION, explainer.layer, *key, explainer.classifier,
                 repr(float(explainer.alpha)), self.seed, self.fingerprint)
        return hashlib.sha256(repr(parts).encode()).hexdigest()

    def _cav(self, key, positive, negative, pool):
        cache = self.explainer.cache
        digest = self._key(key)
        if cache and digest in self.memory:
            self.reused += 1
            return self.memory[digest]
        if cache and self.folder is not None:
            stored = _load(self.folder / f"{digest}.npy")
            if stored is not None:
                self.reused += 1
                self.memory[digest] = stored
                return stored
        result = _fit_cav(self.explainer, self._of(positive, pool),
                          self._of(negative, pool),
                          seed=int(digest[:8], 16) % (2**31 - 1),
                          what=key[0] if key[0] == "random" else f"concept {key[1]!r}")
        self.trained += 1
        if cache:
            self.memory[digest] = result
            if self.folder is not None:
                _store(self.folder / f"{digest}.npy", result)
        return result

    def _of(self, source, pool):
        """Activations of a concept's examples or of some rows of the random pool."""
        if source[0] == "concept":
            name, xc, lc, rows = source[1:]
            if ("concept", name) not in self._activations:
                self._activations[("concept", name)] = self.tap.activations(xc, lc)
            return self._activations[("concept", name)][rows]
        if "pool" not in self._activations:
            self._activations["pool"] = self.tap.activations(*pool)
        return self._activations["pool"][source[1]]


def _rows(x, lengths, rows):
    return x[rows], None if lengths is None else np.asarray(lengths)[rows]


def _fit_cav(explainer, positive, negative, seed, what):
    """Unit normal of a linear classifier separating ``positive`` from ``negative``.

    Returns ``(cav, training accuracy)``; the CAV points to ``positive``.
    """
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    features = np.concatenate([positive, negative])
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    if explainer.classifier == "sgd":
        classifier = SGDClassifier(alpha=explainer.alpha, max_iter=1000, tol=1e-3,
                                   class_weight="balanced", random_state=seed)
    else:
        classifier = LogisticRegression(C=1.0 / (explainer.alpha * len(features)),
                                        class_weight="balanced", max_iter=1000)
    classifier.fit(features, labels)
    weights = classifier.coef_.ravel().astype(np.float64)
    norm = np.linalg.norm(weights)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(
            f"The classifier of the {what} CAV at layer={explainer.layer!r} has "
            "all-zero weights: the activations of its examples do not differ from "
            "the random examples' there (dead units?). Choose another layer, or "
            "other examples."
        )
    return weights / norm, float(classifier.score(features, labels))


def _t_test(concept_scores, random_scores):
    """Two-sided p-value of equal mean scores; 1 where both are constant and equal."""
    if np.ptp(concept_scores) == 0 and np.ptp(random_scores) == 0:
        return 1.0 if concept_scores[0] == random_scores[0] else 0.0
    with warnings.catch_warnings():
        # One group constant (a concept with score 1 in every run) makes
        # scipy warn of precision loss; the test is still exact then.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(concept_scores, random_scores).pvalue)


# -- cache keys and files ---------------------------------------------------------


def _digest(x, lengths=None):
    """SHA-256 of an array's shape, dtype and bytes (and its lengths)."""
    digest = hashlib.sha256()
    x = np.ascontiguousarray(x, dtype=np.float64)
    digest.update(repr(x.shape).encode())
    digest.update(x.tobytes())
    if lengths is not None:
        digest.update(np.ascontiguousarray(lengths, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _fingerprint(model, estimator):
    """SHA-256 of the fitted weights, and of a pipeline's fitted preprocessing."""
    digest = hashlib.sha256()
    for name, tensor in model.module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    steps, _ = split_pipeline(estimator)
    for name, step in steps:
        digest.update(f"{name}:{type(step).__name__}".encode())
        for attribute, value in sorted(vars(step).items()):
            if attribute.endswith("_") and isinstance(value, np.ndarray):
                digest.update(attribute.encode())
                digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _store(path, result):
    """A CAV and its accuracy as one float64 ``.npy`` file (no pickle), atomically."""
    cav, accuracy = result
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(partial, "wb") as file:
        np.save(file, np.r_[accuracy, cav], allow_pickle=False)
    os.replace(partial, path)


def _load(path):
    """A stored ``(cav, accuracy)``, or None when absent or unreadable."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if array.ndim != 1 or array.dtype != np.float64 or len(array) < 2:
        return None
    return array[1:], float(array[0])
