"""Attention maps of the Transformer and attention-pooling RNN estimators.

What a network attends to is read off its forward pass, not attributed: a
Transformer's self-attention weights per layer and head, summarized over
layers by attention rollout (Abnar & Zuidema, 2020), and an RNN's
attention pooling weights over its steps. :func:`to_html` writes them as a
standalone page.
"""

import html
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import HasMethods, Interval, StrOptions
from sklears_neural.explain._base import Explainer, batch_rows
from sklears_neural.explain._explanation import Explanation
from sklears_neural.explain._model import TorchModel, resolve_targets, split_pipeline

__all__ = ["AttentionMap", "attention_rollout", "fuse_heads", "to_html"]

#: Ways to combine a layer's heads into one map (``head_fusion``).
HEAD_FUSIONS = ("mean", "max", "min")


class AttentionMap(Explainer):
    """Attention over the input steps: per layer and head, and attention rollout.

    For a Transformer (:class:`~sklears_neural.TransformerClassifier`,
    :class:`~sklears_neural.TransformerRegressor`) with self-attention
    weights :math:`A^{(l)}_h` (layer :math:`l`, head :math:`h`, rows
    summing to 1 over the valid steps), the heads are fused,
    :math:`\\bar A^{(l)} = \\mathrm{fuse}_h A^{(l)}_h` (``head_fusion``), and

    - without rollout, ``values`` summarizes the map of one layer
      (``layer``, the last by default), its rows renormalized;
    - with ``rollout=True`` (Abnar & Zuidema, 2020), the residual
      connections are accounted for by adding the identity and
      renormalizing the rows, :math:`\\hat A^{(l)} = \\mathrm{rownorm}(\\bar
      A^{(l)} + I)`, and the layers are chained:
      :math:`R = \\hat A^{(L)} \\cdots \\hat A^{(1)}`. :math:`R_{st}` is how
      much of step :math:`s`'s representation after layer :math:`L` comes
      from input step :math:`t`. ``discard_ratio`` first zeroes that
      fraction of the smallest fused weights of each layer (Gildenblat's
      vit-explain), which sharpens the product.

    The map (``M``, ``T' x T'``) becomes one weight per input step by the
    rows the prediction reads: the CLS token's row with ``pooling="cls"``
    (``values`` then leaves out the CLS column, so they sum to 1 minus what
    the CLS token keeps of itself), the attention pooling's weights over
    the rows with ``pooling="attention"``, and the mean of the valid rows
    otherwise ("mean"; "max" has no weights per step, and ``per_step``
    models read every row). For an RNN with attention pooling
    (:class:`~sklears_neural.RNNClassifier` with ``pooling="additive"``,
    ``"multiplicative"``, ``"scaled_dot"`` or ``"multi_head"``), ``values``
    are the pooling weights (heads fused for ``"multi_head"``): the one
    attention such a network has, so ``rollout`` changes nothing.

    Attention does not depend on the explained output: ``target`` only
    labels the samples (their predicted class by default), and ``output``
    is unused. Padded steps get exactly 0.

    Parameters
    ----------
    estimator : fitted Transformer or attention-pooling RNN of sklears_neural
        Or a Pipeline ending in one, whose preprocessing steps are affine
        (scalers, PCA).
    rollout : bool, default=False
        Summarize all layers (up to ``layer``) by attention rollout instead
        of showing one layer's attention.
    head_fusion : {"mean", "max", "min"}, default="mean"
        How each layer's heads become one map: their mean (Abnar &
        Zuidema), or elementwise maximum or minimum (vit-explain).
    discard_ratio : float in [0, 1), default=0.0
        With ``rollout``, the fraction of each fused layer map's smallest
        weights (per sample, over its valid steps) set to 0 before the
        identity is added.
    layer : int or None, default=None
        The layer shown without rollout, or the last one rolled out
        (negative counts from the end); None: the last layer.
    output : {"auto", "probability", "logit"}, default="auto"
        Unused: attention is the same whatever output is explained.
    batch_size : int or "auto", default="auto"
        Sequences per forward pass; ``"auto"`` keeps the attention maps of
        a pass near 2**20 values.

    Notes
    -----
    Cost: one forward pass per sequence (two: one for the predicted
    classes), keeping ``num_layers * num_heads * T'^2`` weights per
    sequence, and ``num_layers`` batched ``T' x T'`` products for rollout.

    ``explain(X)`` returns an :class:`Explanation` with ``values`` of shape
    ``(n_samples, T)`` (``T`` the longest sequence of X; ``lengths`` gives
    each sequence's), ``feature_names`` ``t0 .. t{T-1}``, ``data`` the
    input, and

    - ``attention``: a Transformer's maps, a list of ``num_layers`` arrays
      ``(n_samples, num_heads, T', T')`` as
      :meth:`~sklears_neural.TransformerClassifier.get_attention` gives
      them (``T' = T + 1`` with a CLS token at index 0); an RNN's pooling
      weights ``(n_samples, T)`` or ``(n_samples, num_heads, T)`` as its
      ``get_attention`` gives them;
    - ``rollout``: the rollout matrix ``R``, ``(n_samples, T', T')``, whose
      valid rows sum to 1 (None for an RNN);
    - ``pooling_attention``: the attention pooling's weights over ``T'``
      (None without attention pooling); ``cls``: whether index 0 of the
      maps is the CLS token; ``description``: what ``values`` show, in
      words.

    :meth:`Explanation.plot` with ``kind="sequence"`` draws ``values`` as a
    heatmap over the steps; :func:`to_html` writes a standalone page.

    References
    ----------
    Abnar, S. and Zuidema, W. (2020). Quantifying attention flow in
    transformers. ACL.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural import TransformerClassifier
    >>> from sklears_neural.explain import AttentionMap
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(40, 6, 2))
    >>> y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    >>> model = TransformerClassifier(d_model=8, num_heads=2, max_iter=5,
    ...                               random_state=0).fit(X, y)
    >>> expl = AttentionMap(model, rollout=True).explain(X[:3])
    >>> expl.values.shape, [a.shape for a in expl.attention]
    ((3, 6), [(3, 2, 6, 6), (3, 2, 6, 6)])
    >>> expl.values.sum(axis=1).round(6)
    array([1., 1., 1.])
    """

    _parameter_constraints: dict = {
        **Explainer._parameter_constraints,
        "estimator": [HasMethods(["fit", "predict"])],
        "rollout": ["boolean"],
        "head_fusion": [StrOptions(set(HEAD_FUSIONS))],
        "discard_ratio": [Interval(Real, 0, 1, closed="left")],
        "layer": [Integral, None],
    }

    def __init__(self, estimator, *, rollout=False, head_fusion="mean",
                 discard_ratio=0.0, layer=None, output="auto", batch_size="auto"):
        self.estimator = estimator
        self.rollout = rollout
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.layer = layer
        self.output = output
        self.batch_size = batch_size

    @staticmethod
    def to_html(explanation, path=None, **kwargs):
        """A standalone HTML page of ``explanation``; see :func:`to_html`."""
        return to_html(explanation, path, **kwargs)

    def _explain(self, X, target):
        family = _attention_family(self.estimator)
        model = TorchModel(self.estimator, self.output, method="AttentionMap")
        x, lengths, _ = model.prepare(X)
        module = model.module
        steps = _steps(x, model)
        heads = _heads(module, family)
        rows = batch_rows(self.batch_size,
                          max(1, heads * max(1, getattr(module, "num_layers", 1)))
                          * (steps + 1) ** 2)
        per_step = bool(getattr(model.final, "per_step", False))
        targets = None
        if not per_step:
            outputs = model.predict(x, lengths, rows)
            targets = resolve_targets(target, outputs, model.output_names,
                                      model.classifier)
        maps, pooling = _forward(model, family, x, lengths, rows)
        if family == "rnn":
            heads = maps.ndim == 3  # multi_head pooling: (n, H, T)
            values = _normalize(fuse_heads(maps, self.head_fusion, axis=1)
                                if heads else maps)
            description = "attention pooling weights" + (
                f" (heads fused by {self.head_fusion})" if heads else "")
            extras = dict(attention=maps, rollout=None, pooling_attention=None,
                          cls=False, description=description)
        else:
            values, extras = self._transformer_values(module, maps, pooling, len(x),
                                                      lengths, per_step)
        values = _zero_padding(values, lengths)
        return Explanation(
            values, data=x, feature_names=[f"t{t}" for t in range(values.shape[1])],
            output_names=model.output_names, targets=targets, output=None,
            method="AttentionMap", lengths=lengths, feature_shape=values.shape[1:],
            layout="sequence", **extras,
        )

    def _transformer_values(self, module, maps, pooling, n, lengths, per_step):
        n_layers = len(maps)
        if n_layers == 0 and pooling is None:
            raise ValueError(
                "This Transformer has num_layers=0: no self-attention to show. Fit it "
                "with num_layers >= 1, or with pooling='attention' to read the "
                "pooling's weights."
            )
        cls = module.cls_token is not None
        valid = _valid(n, (maps[0] if maps else pooling).shape[-1], lengths, cls)
        rolled = None
        if n_layers:
            last = self._layer_index(n_layers)
            rolled = attention_rollout(maps[: last + 1], valid=valid,
                                       head_fusion=self.head_fusion,
                                       discard_ratio=self.discard_ratio)
            if self.rollout:
                matrix = rolled
            else:
                fused = fuse_heads(maps[last], self.head_fusion, axis=1)
                # max/min fusion leaves rows that do not sum to 1.
                matrix = _normalize(fused * valid[:, None, :]) * valid[:, :, None]
        else:
            matrix = np.eye(pooling.shape[-1])[None] * valid[:, :, None]
        query = _query(module.pooling, pooling, valid, cls, per_step)
        summary = np.einsum("ns,nst->nt", query, matrix)
        values = summary[:, 1:] if cls else summary
        extras = dict(attention=maps, rollout=rolled, pooling_attention=pooling,
                      cls=cls,
                      description=self._description(n_layers, module.pooling, per_step))
        return values, extras

    def _description(self, n_layers, pooling, per_step):
        """What ``values`` show, in words (for pages and titles)."""
        if n_layers == 0:
            return "attention pooling weights"
        last = self._layer_index(n_layers)
        layers = f"layers 0-{last}" if last else "layer 0"
        shown = (f"attention rollout of {layers}" if self.rollout
                 else f"attention of layer {last}")
        pooled = None if per_step else pooling
        read = {"cls": "the CLS token's row",
                "attention": "the attention pooling's weights"}.get(
                    pooled, "the mean of the rows")
        return f"{shown}, heads fused by {self.head_fusion}, read through {read}"

    def _layer_index(self, n_layers):
        layer = n_layers - 1 if self.layer is None else int(self.layer)
        if not -n_layers <= layer < n_layers:
            raise ValueError(
                f"layer={self.layer} is out of range for a Transformer of "
                f"{n_layers} layer(s): pass an index in [{-n_layers}, "
                f"{n_layers - 1}], or None for the last layer."
            )
        return layer % n_layers


# -- the family and its forward pass ---------------------------------------------------


def _attention_family(estimator):
    """``"transformer"`` or ``"rnn"``; a TypeError naming the fix otherwise."""
    from sklears_neural.nn.recurrent import RecurrentNet
    from sklears_neural.nn.transformer import TransformerNet

    _, final = split_pipeline(estimator)
    name = type(final).__name__
    check_is_fitted(final)
    module = getattr(final, "module_", None)
    if isinstance(module, TransformerNet):
        return "transformer"
    if isinstance(module, RecurrentNet):
        if module.pool is None and module.per_step:
            raise TypeError(
                f"AttentionMap reads attention weights, and {name}(per_step=True) "
                "pools nothing, so it has none. Attribute its per-step predictions "
                "with IntegratedGradients or Saliency, or fit a "
                "TransformerClassifier/TransformerRegressor, whose self-attention "
                "AttentionMap reads."
            )
        if module.pool is None:
            pooling = getattr(final, "pooling", module.pooling)
            raise TypeError(
                "AttentionMap reads attention weights, and "
                f"{name}(pooling={pooling!r}) has none. Fit it with an attention "
                "pooling: pooling='additive', 'multiplicative', 'scaled_dot' or "
                "'multi_head' (per_step=False); or attribute its predictions with "
                "IntegratedGradients or Saliency."
            )
        return "rnn"
    raise TypeError(
        "AttentionMap reads the attention of a TransformerClassifier/"
        "TransformerRegressor or of an RNNClassifier/RNNRegressor with an "
        f"attention pooling; {name} has no attention. Attribute its predictions with "
        "IntegratedGradients, Saliency or KernelShapExplainer instead."
    )


def _steps(x, model):
    """Steps ``T`` of the explained input, as the network sees it."""
    if x.ndim == 3:
        return x.shape[1]
    z = model.network_inputs(model.tensor(x[:1]))
    return int((z[0] if isinstance(z, tuple) else z).shape[1])


def _heads(module, family):
    if family == "transformer":
        return module.num_heads
    return getattr(module.pool, "num_heads", 1)


def _forward(model, family, x, lengths, rows):
    """Attention of every sequence.

    A Transformer's ``(maps, pooling weights or None)``; an RNN's
    ``(pooling weights, None)``.
    """
    module = model.module
    parts, pools = [], []
    with torch.no_grad():
        for start in range(0, len(x), rows):
            batch = slice(start, start + rows)
            part_lengths = None if lengths is None else lengths[batch]
            z, z_lengths = model.network_inputs(model.tensor(x[batch]), part_lengths)
            if family == "rnn":
                weights = module.forward_with_attention(z, z_lengths)[1].steps
                parts.append(weights.cpu().numpy())
                continue
            # TransformerNet.get_attention's computation, keeping the
            # encoder's output for the attention pooling.
            h, pad, weights = module._encode(z, z_lengths, need_weights=True)
            if pad is not None:
                query_valid = (~pad)[:, None, :, None].to(h.dtype)
                weights = [w * query_valid for w in weights]
            parts.append([w.cpu().numpy() for w in weights])
            if module.pool is not None:
                pools.append(module.pool(h, key_padding_mask=pad)[1].cpu().numpy())
    if family == "rnn":
        return np.concatenate(parts), None
    maps = [np.concatenate([part[layer] for part in parts])
            for layer in range(len(parts[0]))]
    return maps, (np.concatenate(pools) if pools else None)


# -- rollout ------------------------------------------------------------------------


def fuse_heads(attention, head_fusion="mean", axis=1):
    """One map from several heads: their mean, maximum or minimum along ``axis``."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(
            f"head_fusion={head_fusion!r} is not one of "
            f"{', '.join(map(repr, HEAD_FUSIONS))}."
        )
    return getattr(np, head_fusion)(np.asarray(attention, dtype=np.float64), axis=axis)


def attention_rollout(attention, lengths=None, *, valid=None, head_fusion="mean",
                      discard_ratio=0.0):
    """Attention rollout (Abnar & Zuidema, 2020) of a stack of self-attention maps.

    .. math::

        \\hat A^{(l)} = \\mathrm{rownorm}\\big(\\mathrm{discard}(\\mathrm{fuse}_h
        A^{(l)}_h) + I\\big), \\qquad R = \\hat A^{(L)} \\cdots \\hat A^{(1)}

    where ``rownorm`` divides each row by its sum, the identity stands for
    the residual connection, and ``discard`` zeroes the smallest
    ``discard_ratio`` of each sample's fused weights over its valid steps.

    Parameters
    ----------
    attention : list of ndarray of shape (n_samples, num_heads, T, T)
        The maps of layers ``1 .. L`` in order (what ``get_attention``
        returns): ``attention[l][i, h, s, t]`` is how much step ``s``
        attends to step ``t``.
    lengths : array-like of int of shape (n_samples,) or None, default=None
        Valid steps per sample (counted from index 0); None: all ``T``.
    valid : ndarray of bool of shape (n_samples, T) or None, default=None
        The valid steps instead of ``lengths`` (a CLS token at 0, say).
    head_fusion : {"mean", "max", "min"}, default="mean"
    discard_ratio : float in [0, 1), default=0.0

    Returns
    -------
    rollout : ndarray of shape (n_samples, T, T)
        Rows of valid steps sum to 1; rows and columns of padded steps are
        0. With no layers, the identity over the valid steps.
    """
    if not 0 <= discard_ratio < 1:
        raise ValueError(f"discard_ratio={discard_ratio} must be in [0, 1).")
    maps = [np.asarray(a, dtype=np.float64) for a in attention]
    if not maps:
        raise ValueError("attention holds no layers: nothing to roll out.")
    n, steps = maps[0].shape[0], maps[0].shape[-1]
    if valid is None:
        valid = _valid(n, steps, lengths, cls=False)
    valid = np.asarray(valid, dtype=bool)
    pair = valid[:, :, None] & valid[:, None, :]
    identity = np.eye(steps)[None] * valid[:, :, None]
    result = identity.copy()
    for layer in maps:
        fused = fuse_heads(layer, head_fusion, axis=1) * pair
        if discard_ratio > 0:
            fused = _discard(fused, pair, discard_ratio)
        result = _normalize(fused + identity) @ result
    return result


def _discard(fused, pair, ratio):
    """Zero the smallest ``ratio`` of each sample's weights over its valid pairs."""
    fused = fused.copy()
    for sample, mask in zip(fused, pair):
        weights = sample[mask]
        count = int(ratio * weights.size)
        if count:
            weights[np.argsort(weights, kind="stable")[:count]] = 0.0
            sample[mask] = weights
    return fused


def _normalize(maps):
    """Rows divided by their sums; all-zero rows (padding) stay 0."""
    sums = maps.sum(axis=-1, keepdims=True)
    return np.divide(maps, sums, out=np.zeros_like(maps), where=sums > 0)


def _valid(n, steps, lengths, cls):
    """``(n, steps)`` mask of valid steps (a CLS token at 0 is valid)."""
    if lengths is None:
        return np.ones((n, steps), dtype=bool)
    lengths = np.asarray(lengths) + (1 if cls else 0)
    return np.arange(steps)[None, :] < lengths[:, None]


def _query(pooling, pool_weights, valid, cls, per_step):
    """Per sample, the weight of each row of the map in the prediction."""
    if per_step or pooling in ("mean", "max"):
        return _normalize(valid.astype(np.float64))
    if pooling == "cls":
        query = np.zeros(valid.shape)
        query[:, 0] = 1.0
        return query
    return pool_weights  # "attention"


def _zero_padding(values, lengths):
    if lengths is None:
        return values
    return values * (np.arange(values.shape[1])[None, :] < np.asarray(lengths)[:, None])


# -- HTML -----------------------------------------------------------------------------


def to_html(explanation, path=None, *, tokens=None, samples=None, maps=True,
            title=None):
    """A standalone HTML page of an :class:`AttentionMap` explanation.

    Per sample: its steps, each labelled by its token (``tokens``) or input
    values and shaded by its weight in ``values``; then, with ``maps``,
    tables of the attention of every layer and head (and the rollout),
    shaded by weight. No scripts and no external files: inline styles
    only, so the page opens anywhere and can be mailed.

    Parameters
    ----------
    explanation : Explanation
        From :meth:`AttentionMap.explain`.
    path : str, path or None, default=None
        Where to write the page (UTF-8); None writes nothing.
    tokens : list of str, or list of lists of str, or None, default=None
        Step labels: one list for all samples or one per sample. None:
        each step's input values (rounded).
    samples : list of int or None, default=None
        Samples shown; None: the first 4.
    maps : bool, default=True
        Also show the per-layer, per-head attention tables.
    title : str or None, default=None

    Returns
    -------
    str
        The page.
    """
    if explanation.method != "AttentionMap":
        raise ValueError(
            "to_html draws AttentionMap explanations; this one is from "
            f"{explanation.method!r}. Use Explanation.plot for other methods."
        )
    n = len(explanation)
    rows = list(range(min(4, n))) if samples is None else [int(i) for i in samples]
    for row in rows:
        if not 0 <= row < n:
            raise ValueError(
                f"samples holds {row}, but the explanation has {n} samples."
            )
    title = title or "Attention"
    description = explanation.extras.get("description", "weight")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Steps shaded by {html.escape(description)}, relative to each "
        "sample's largest weight (tables: to each table's largest); hover over "
        "a step or cell for its weight.</p>",
    ]
    for row in rows:
        parts.append(_sample_html(explanation, row, tokens, maps))
    parts.append("</body></html>")
    page = "\n".join(parts)
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page


_CSS = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "h2{font-size:1.1em;margin-top:1.5em}h3{font-size:.95em;margin:.8em 0 .3em}"
    ".steps{display:flex;flex-wrap:wrap;gap:3px;margin:.4em 0}"
    ".step{padding:2px 5px;border:1px solid #ccc;border-radius:3px;"
    "font-family:monospace}"
    ".maps{display:flex;flex-wrap:wrap;gap:1.2em}"
    "table.map{border-collapse:collapse;font-size:9px}"
    "table.map td{width:14px;height:14px;padding:0;border:1px solid #eee}"
    "table.map th{font-weight:normal;padding:0 3px;color:#555}"
)


def _shade(weight, top):
    """Inline background of a weight: red, opaque at ``top``."""
    alpha = 0.0 if top <= 0 else float(np.clip(weight / top, 0, 1))
    return f"background:rgba(200,40,30,{alpha:.3f})"


def _labels(explanation, row, tokens, steps):
    if tokens is not None:
        labels = tokens[row] if tokens and not isinstance(tokens[0], str) else tokens
        labels = [str(label) for label in list(labels)[:steps]]
        return labels + [""] * (steps - len(labels))
    data = explanation.data
    if data is None:
        return [f"t{t}" for t in range(steps)]
    if np.size(data[row]) % steps:
        return [f"t{t}" for t in range(steps)]
    values = np.asarray(data[row]).reshape(steps, -1)
    return [", ".join(f"{v:.3g}" for v in step[:3]) + (", ..." if len(step) > 3 else "")
            for step in values]


def _sample_html(explanation, row, tokens, maps):
    values = explanation.values[row]
    length = (int(explanation.lengths[row]) if explanation.lengths is not None
              else len(values))
    labels = _labels(explanation, row, tokens, len(values))
    heading = f"Sample {row}"
    if explanation.targets is not None and explanation.output_names is not None:
        heading += f" (class {explanation.output_names[explanation.targets[row]]})"
    top = float(values[:length].max()) if length else 0.0
    spans = "".join(
        f'<span class="step" style="{_shade(values[t], top)}" '
        f'title="step {t}: {values[t]:.4f}">{html.escape(labels[t])}</span>'
        for t in range(length)
    )
    parts = [f"<section><h2>{html.escape(heading)}</h2>",
             f'<div class="steps">{spans}</div>']
    if maps:
        parts.append(_maps_html(explanation, row, labels[:length], length))
    parts.append("</section>")
    return "\n".join(parts)


def _maps_html(explanation, row, labels, length):
    extras = explanation.extras
    cls = bool(extras.get("cls", False))
    axis = (["CLS"] if cls else []) + [label[:12] for label in labels]
    size = length + (1 if cls else 0)
    attention = extras.get("attention")
    tables = []
    if isinstance(attention, list):  # Transformer: layers of (n, H, T', T')
        for layer, heads in enumerate(attention):
            for head, matrix in enumerate(heads[row]):
                tables.append((f"layer {layer}, head {head}", matrix[:size, :size],
                               axis, axis))
        if extras.get("rollout") is not None:
            tables.append(("rollout", extras["rollout"][row][:size, :size], axis, axis))
    elif attention is not None:  # RNN pooling: (n, T) or (n, H, T)
        weights = np.asarray(attention[row])
        weights = weights[None] if weights.ndim == 1 else weights
        names = [f"head {h}" for h in range(len(weights))]
        tables.append(("attention pooling", weights[:, :length], names, axis))
    blocks = "".join(
        f"<div><h3>{html.escape(name)}</h3>{_table(matrix, rows, columns)}</div>"
        for name, matrix, rows, columns in tables
    )
    return f'<div class="maps">{blocks}</div>'


def _table(matrix, rows, columns):
    top = float(matrix.max()) if matrix.size else 0.0
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{html.escape(rows[i])}</th>" + "".join(
            f'<td style="{_shade(w, top)}" title="{html.escape(rows[i])} &#8594; '
            f'{html.escape(columns[j])}: {w:.4f}"></td>'
            for j, w in enumerate(line)
        ) + "</tr>"
        for i, line in enumerate(matrix)
    )
    return f'<table class="map"><tr><th></th>{head}</tr>{body}</table>'
