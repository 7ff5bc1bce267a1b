"""What every explainer returns: :class:`Explanation`."""

import numpy as np

__all__ = ["Explanation"]


class Explanation:
    """Attributions of some model outputs to the input features, for some samples.

    Every explainer of :mod:`sklears_neural.explain` returns one. The
    attributes follow ``shap.Explanation``'s names, so code written for shap
    reads these too.

    Parameters
    ----------
    values : ndarray
        Attributions, one per input value: ``(n_samples, *feature_shape)``
        when one output is explained per sample (the ``target``), or
        ``(n_samples, *feature_shape, n_outputs)`` when all outputs are.
        ``feature_shape`` is the shape of one sample of ``data``: ``(n_features,)``
        for rows, ``(C, H, W)`` for images, ``(n_steps, n_features)`` for
        sequences. Global methods (:class:`PermutationImportance`, TCAV) have
        a single row.
    base_values : ndarray or None
        The reference each sample's attributions are measured from, per
        sample (and output): the expected output over the background for
        SHAP, the output at the baseline for integrated gradients, None where
        a method has none (saliency maps).
    data : ndarray or None
        The explained samples; for attribution methods in the layout of
        ``values`` without the outputs axis (attention maps have one value
        per step of ``(n, T, F)`` samples).
    feature_names : list of str or None
        One name per feature of ``data``'s flattened feature shape: the
        columns of a DataFrame, the estimator's ``feature_names_in_``, or
        generated (``x3``; ``x[0,4,5]`` for images; ``t2:x1`` for sequences).
    output_names : list of str or None
        One per model output: class labels for a classifier, ``y0`` ... for
        a regressor.
    targets : ndarray of int or None
        Per sample, the index (into ``output_names``) of the explained
        output; None when every output is explained.
    output : str or None
        Which output the values explain: ``"probability"``, ``"logit"`` or
        ``"prediction"``.
    method : str or None
        The explainer's name, for titles and frames.
    lengths : ndarray of int or None
        For padded sequences, each sample's true length: steps beyond it
        are padding and hold zero attribution.
    feature_shape : tuple of int or None
        Shape of one sample's features; None: ``data.shape[1:]``, or
        ``values.shape[1:]`` without data.
    layout : {"tabular", "image", "sequence"} or None
        How a sample's features are arranged, for :meth:`plot`; None: from
        the rank of ``feature_shape`` (1: tabular, 2: sequence, more: image).
    **extras
        Method-specific results, readable as attributes:
        ``convergence_delta`` (integrated gradients), ``local_r2`` and
        ``intercept`` (LIME), ``p_values`` (TCAV), ``attention`` maps.
    """

    def __init__(self, values, base_values=None, data=None, feature_names=None,
                 output_names=None, targets=None, output=None, method=None,
                 lengths=None, feature_shape=None, layout=None, **extras):
        self.values = np.asarray(values)
        self.base_values = None if base_values is None else np.asarray(base_values)
        self.data = None if data is None else np.asarray(data)
        self.feature_names = None if feature_names is None else list(feature_names)
        self.output_names = None if output_names is None else list(output_names)
        self.targets = None if targets is None else np.asarray(targets)
        self.output = output
        self.method = method
        self.lengths = None if lengths is None else np.asarray(lengths)
        if feature_shape is None:
            source = self.data if self.data is not None else self.values
            feature_shape = source.shape[1:]
        self.feature_shape = tuple(int(d) for d in feature_shape)
        if layout is None:
            layout = {1: "tabular", 2: "sequence"}.get(len(self.feature_shape), "image")
        self.layout = layout
        self.extras = dict(extras)

    def __getattr__(self, name):
        # Method-specific results (convergence_delta, local_r2, ...). Only
        # called when normal lookup fails; "extras" itself is guarded so that
        # unpickling (which looks attributes up before __init__ state exists)
        # does not recurse.
        if name != "extras" and name in self.__dict__.get("extras", {}):
            return self.__dict__["extras"][name]
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r}"
            + (f"; this one holds {sorted(self.__dict__.get('extras', {}))}"
               if self.__dict__.get("extras") else "")
        )

    def __repr__(self):
        extras = "".join(f", {name}=..." for name in sorted(self.extras))
        return (f"Explanation(method={self.method!r}, output={self.output!r}, "
                f"values.shape={self.values.shape}{extras})")

    def __len__(self):
        return self.values.shape[0]

    def __getitem__(self, rows):
        """The explanation of some samples (an index, slice, mask or list of rows)."""
        if isinstance(rows, (int, np.integer)):
            rows = [rows]

        def take(array):
            return None if array is None or array.ndim == 0 else array[rows]

        base = self.base_values
        if base is not None and base.ndim > 0 and base.shape[0] == len(self):
            base = base[rows]
        extras = {name: self._rows_of(value, rows) for name, value in self.extras.items()}
        return Explanation(self.values[rows], base, take(self.data), self.feature_names,
                           self.output_names, take(self.targets), self.output,
                           self.method, take(self.lengths), self.feature_shape,
                           self.layout, **extras)

    def _rows_of(self, value, rows):
        """An extra's entries for ``rows``: arrays with a row per sample are
        sliced, and so is each array of a list of them (attention maps per
        layer); anything else is shared by every sample."""
        def per_sample(item):
            return isinstance(item, np.ndarray) and item.ndim and item.shape[0] == len(self)

        if per_sample(value):
            return value[rows]
        if isinstance(value, list) and value and all(per_sample(item) for item in value):
            return [item[rows] for item in value]
        return value

    # -- views -------------------------------------------------------------

    @property
    def has_outputs_axis(self):
        """Whether ``values`` ends with an outputs axis (every output explained)."""
        return self.values.ndim == 2 + len(self.feature_shape)

    def flat_values(self):
        """Values as ``(n_samples, n_features)``, or ``(n_samples, n_features, n_outputs)``."""
        n = self.values.shape[0]
        if self.has_outputs_axis:
            return self.values.reshape(n, -1, self.values.shape[-1])
        return self.values.reshape(n, -1)

    def to_frame(self):
        """The values as a :class:`pandas.DataFrame`, one column per feature.

        One row per sample. When every output is explained, the columns are a
        two-level index ``(output, feature)``. N-D features are flattened in
        C order, named as in ``feature_names``.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        values = self.flat_values()
        names = self.feature_names or [f"x{i}" for i in range(values.shape[1])]
        if values.ndim == 3:
            outputs = self.output_names or [f"y{k}" for k in range(values.shape[2])]
            columns = pd.MultiIndex.from_product([outputs, names],
                                                 names=["output", "feature"])
            values = values.transpose(0, 2, 1).reshape(values.shape[0], -1)
            return pd.DataFrame(values, columns=columns)
        frame = pd.DataFrame(values, columns=pd.Index(names, name="feature"))
        if self.targets is not None and self.output_names is not None:
            frame.index = pd.Index(
                [str(self.output_names[t]) for t in self.targets], name="target"
            )
        return frame

    def plot(self, kind="auto", **kwargs):
        """Draw the explanation with matplotlib (the ``plot`` extra).

        Parameters
        ----------
        kind : {"auto", "bar", "summary", "image", "sequence", "heatmap"}, default="auto"
            ``"bar"``: mean absolute attribution per feature, largest first;
            ``"summary"``: a beeswarm-style dot per sample and feature,
            colored by the feature's value; ``"image"``: attributions over
            image input as heatmaps beside the images; ``"sequence"``: a
            steps x features heatmap per sample; ``"heatmap"``: samples x
            features. ``"auto"`` picks ``"image"`` for image data,
            ``"sequence"`` for sequences, ``"bar"`` otherwise.
        **kwargs
            ``ax`` (an axes to draw in, for single-panel kinds),
            ``max_display`` (features shown, default 20), ``samples`` (rows
            drawn by the image and sequence kinds, default the first 4),
            ``cmap``, ``title``.

        Returns
        -------
        matplotlib.figure.Figure
        """
        from sklears_neural.explain import _plot

        return _plot.plot(self, kind, **kwargs)
