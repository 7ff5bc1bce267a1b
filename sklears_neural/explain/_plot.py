"""Plots of an :class:`~sklears_neural.explain.Explanation` (matplotlib, the ``plot`` extra).

Each kind draws into a new figure (or a given ``ax``) and returns the
figure; nothing is shown or saved, so scripts and notebooks decide.
Attributions are drawn with a diverging colormap centered at zero: red
pushes the explained output up, blue down.
"""

import numpy as np

__all__ = ["plot"]

KINDS = ("auto", "bar", "summary", "image", "sequence", "heatmap")
DIVERGING = "RdBu_r"
SEQUENTIAL = "Reds"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "Explanation.plot needs matplotlib: pip install 'sklears-neural[plot]'."
        ) from error
    return plt


def plot(explanation, kind="auto", *, ax=None, max_display=20, samples=None, cmap=None,
         title=None, shape=None, step_labels=None):
    """Draw ``explanation``; see :meth:`Explanation.plot`."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(map(repr, KINDS))}.")
    if kind == "auto":
        kind = {"image": "image", "sequence": "sequence"}.get(explanation.layout, "bar")
    if kind in ("image", "sequence") and ax is not None:
        raise ValueError(f"kind={kind!r} draws one panel per sample; it takes no ax.")
    plt = _pyplot()
    title = title if title is not None else _title(explanation)
    if kind == "bar":
        return _bar(plt, explanation, ax, max_display, title)
    if kind == "summary":
        return _summary(plt, explanation, ax, max_display, cmap, title)
    if kind == "heatmap":
        return _heatmap(plt, explanation, ax, max_display, cmap, title)
    rows = _sample_rows(explanation, samples)
    if kind == "image":
        return _images(plt, explanation, rows, cmap, title, shape)
    return _sequences(plt, explanation, rows, cmap, title, step_labels)


def _title(explanation):
    parts = [explanation.method or "attributions"]
    if explanation.output:
        parts.append(f"of the {explanation.output}")
    return " ".join(parts)


def _one_output(explanation, kind):
    """(n, n_features) values of one explained output per sample."""
    values = explanation.flat_values()
    if values.ndim == 3:
        raise ValueError(
            f"kind={kind!r} draws one output per sample; this explanation holds every "
            "output. Explain with a target (target=None picks the predicted class), or "
            "plot kind='bar', which stacks outputs."
        )
    return values


def _names(explanation, n_features):
    names = explanation.feature_names
    if names is None or len(names) != n_features:
        return [f"x{i}" for i in range(n_features)]
    return [str(name) for name in names]


def _top_features(importance, max_display):
    order = np.argsort(importance)[::-1]
    return order[: max(1, int(max_display))]


def _new_axes(plt, ax, n_rows):
    if ax is not None:
        return ax.figure, ax
    figure, ax = plt.subplots(figsize=(7, 1.5 + 0.32 * n_rows))
    return figure, ax


def _bar(plt, explanation, ax, max_display, title):
    values = explanation.flat_values()
    names = _names(explanation, values.shape[1])
    if len(values) == 1 and values.ndim == 2:
        return _signed_bar(plt, values[0], names, ax, max_display, title)
    if values.ndim == 3:
        per_output = np.abs(values).mean(axis=0)  # (n_features, n_outputs)
    else:
        per_output = np.abs(values).mean(axis=0)[:, None]
    top = _nonzero(_top_features(per_output.sum(axis=1), max_display),
                   per_output.sum(axis=1))[::-1]
    figure, ax = _new_axes(plt, ax, len(top))
    left = np.zeros(len(top))
    outputs = explanation.output_names if values.ndim == 3 else None
    for k in range(per_output.shape[1]):
        label = None if outputs is None else str(outputs[k])
        ax.barh(np.arange(len(top)), per_output[top, k], left=left, label=label)
        left += per_output[top, k]
    ax.set_yticks(np.arange(len(top)), [names[i] for i in top])
    ax.set_xlabel("mean |attribution|")
    if outputs is not None:
        ax.legend(title="output", fontsize="small")
    ax.set_title(title)
    figure.tight_layout()
    return figure


def _signed_bar(plt, values, names, ax, max_display, title):
    """One sample: each feature's signed attribution, largest magnitude on top."""
    top = _nonzero(_top_features(np.abs(values), max_display), values)[::-1]
    figure, ax = _new_axes(plt, ax, len(top))
    colors = ["tab:red" if values[i] > 0 else "tab:blue" for i in top]
    ax.barh(np.arange(len(top)), values[top], color=colors)
    ax.axvline(0.0, color="0.4", linewidth=0.8)
    ax.set_yticks(np.arange(len(top)), [names[i] for i in top])
    ax.set_xlabel("attribution (red raises the output, blue lowers it)")
    ax.set_title(title)
    figure.tight_layout()
    return figure


def _nonzero(order, values):
    """``order`` without features whose attribution is exactly zero (LIME's
    unselected features), keeping at least one."""
    kept = [i for i in order if values[i] != 0]
    return np.array(kept or list(order[:1]), dtype=np.intp)


def _summary(plt, explanation, ax, max_display, cmap, title):
    values = _one_output(explanation, "summary")
    names = _names(explanation, values.shape[1])
    top = _top_features(np.abs(values).mean(axis=0), max_display)[::-1]
    figure, ax = _new_axes(plt, ax, len(top))
    data = None if explanation.data is None else explanation.data.reshape(len(values), -1)
    rng = np.random.default_rng(0)  # the jitter only; fixed so plots are reproducible
    points = None
    for row, feature in enumerate(top):
        v = values[:, feature]
        jitter = _swarm_offsets(v, rng)
        if data is not None:
            color = _normalized(data[:, feature])
            points = ax.scatter(v, row + jitter, c=color, cmap=cmap or "coolwarm",
                                vmin=0, vmax=1, s=12, linewidths=0)
        else:
            ax.scatter(v, row + jitter, color="tab:blue", s=12, linewidths=0)
    ax.axvline(0.0, color="0.6", linewidth=0.8)
    ax.set_yticks(np.arange(len(top)), [names[i] for i in top])
    ax.set_xlabel("attribution (impact on the output)")
    if points is not None:
        bar = figure.colorbar(points, ax=ax, ticks=[0, 1], aspect=40)
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value")
    ax.set_title(title)
    figure.tight_layout()
    return figure


def _swarm_offsets(v, rng, width=0.35):
    """Vertical offsets that spread dots where many share a value (a beeswarm)."""
    if len(v) < 2 or np.ptp(v) == 0:
        return rng.uniform(-width / 3, width / 3, size=len(v))
    bins = np.clip(((v - v.min()) / np.ptp(v) * 50).astype(int), 0, 50)
    counts = np.bincount(bins, minlength=51)
    density = counts[bins] / counts.max()
    return rng.uniform(-1, 1, size=len(v)) * width * density


def _normalized(column):
    low, high = np.nanpercentile(column, [5, 95])
    if high <= low:
        return np.full(len(column), 0.5)
    return np.clip((column - low) / (high - low), 0, 1)


def _symmetric_limit(values):
    limit = float(np.nanmax(np.abs(values))) if values.size else 0.0
    return limit if limit > 0 else 1.0


def _color_scale(values, cmap):
    """``imshow`` color settings: diverging around 0, or sequential from 0.

    Signed attributions get a diverging map centered at zero; values that
    are never negative (saliency magnitudes, attention weights) a
    sequential one from zero, so that no half of the scale goes unused.
    """
    limit = _symmetric_limit(values)
    if values.size and np.nanmin(values) >= 0:
        return {"cmap": cmap or SEQUENTIAL, "vmin": 0.0, "vmax": limit}
    return {"cmap": cmap or DIVERGING, "vmin": -limit, "vmax": limit}


def _heatmap(plt, explanation, ax, max_display, cmap, title):
    values = _one_output(explanation, "heatmap")
    names = _names(explanation, values.shape[1])
    top = np.sort(_top_features(np.abs(values).mean(axis=0), max_display))
    shown = values[:, top]
    if ax is None:
        figure, ax = plt.subplots(figsize=(1.5 + 0.35 * len(top), 1.5 + 0.25 * len(values)))
    else:
        figure = ax.figure
    image = ax.imshow(shown, aspect="auto", **_color_scale(shown, cmap))
    ax.set_xticks(np.arange(len(top)), [names[i] for i in top], rotation=90)
    ax.set_ylabel("sample")
    figure.colorbar(image, ax=ax, label="attribution")
    ax.set_title(title)
    figure.tight_layout()
    return figure


def _sample_rows(explanation, samples):
    if samples is None:
        return list(range(min(4, len(explanation))))
    rows = np.arange(len(explanation))[samples]
    return list(np.atleast_1d(rows))


def _image_shape(explanation, shape):
    shape = tuple(shape) if shape is not None else explanation.extras.get(
        "image_shape", explanation.feature_shape)
    if len(shape) < 2:
        raise ValueError(
            "kind='image' needs image samples; these have shape "
            f"{explanation.feature_shape}. Pass shape=(C, H, W) (or (H, W)) for flat rows."
        )
    return shape


def _as_picture(array, shape):
    """One sample as a 2-D picture: channels summed, or (H, W) as is."""
    array = np.asarray(array).reshape(shape)
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        return array.sum(axis=0)
    raise ValueError(f"kind='image' draws 2-D images; samples have shape {shape}.")


def _images(plt, explanation, rows, cmap, title, shape):
    values = _one_output(explanation, "image")
    shape = _image_shape(explanation, shape)
    with_data = explanation.data is not None
    columns = 2 if with_data else 1
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.4 * len(rows)),
                                squeeze=False)
    for line, row in enumerate(rows):
        heat = _as_picture(values[row], shape)
        if with_data:
            picture = _as_picture(explanation.data[row], shape)
            axes[line, 0].imshow(picture, cmap="gray")
            axes[line, 0].set_title(_row_label(explanation, row), fontsize="small")
        ax = axes[line, columns - 1]
        image = ax.imshow(heat, **_color_scale(heat, cmap))
        figure.colorbar(image, ax=ax, fraction=0.046)
        for ax in axes[line]:
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _row_label(explanation, row):
    label = f"sample {row}"
    if explanation.targets is not None and explanation.output_names is not None:
        label += f", target {explanation.output_names[explanation.targets[row]]}"
    return label


def _sequences(plt, explanation, rows, cmap, title, step_labels):
    values = _one_output(explanation, "sequence")
    shape = explanation.feature_shape
    if len(shape) == 1:
        shape = (shape[0], 1)  # one value per step (attention over steps)
    figure, axes = plt.subplots(len(rows), 1, figsize=(min(14, 2 + 0.3 * shape[0]),
                                                       1.2 + 0.9 * len(rows) * max(1, shape[1] / 4)),
                                squeeze=False)
    for line, row in enumerate(rows):
        heat = values[row].reshape(shape)
        if explanation.lengths is not None:
            heat = heat[: int(explanation.lengths[row])]
        ax = axes[line, 0]
        image = ax.imshow(heat.T, aspect="auto", **_color_scale(heat, cmap))
        ax.set_ylabel("feature" if shape[1] > 1 else "")
        if shape[1] == 1:
            ax.set_yticks([])
        if step_labels is not None:
            labels = step_labels[row] if np.ndim(step_labels[0]) else step_labels
            ax.set_xticks(np.arange(len(heat)), [str(s) for s in labels[: len(heat)]])
        ax.set_title(_row_label(explanation, row), fontsize="small")
        figure.colorbar(image, ax=ax, fraction=0.03)
    axes[-1, 0].set_xlabel("step")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
