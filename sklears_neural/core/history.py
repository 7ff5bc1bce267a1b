"""Per-epoch training records."""

import json

__all__ = ["History"]


def _import_pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "History.plot needs matplotlib. Install it with "
            "`pip install 'sklears-neural[plot]'` (or `pip install matplotlib`)."
        ) from exc
    return plt


def _record_keys(records):
    """Every key of ``records``, in order of first appearance."""
    seen = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class History(list):
    """A list of per-epoch dicts of plain Python numbers.

    ``history_[-1]["train_loss"]`` is the last epoch's training loss. Values
    are Python floats and ints (never tensors), so a history pickles and dumps
    to JSON as it is.

    Keys holding a ``"/"`` are namespaced diagnostics, such as
    :class:`~sklears_neural.callbacks.GradientStats`'
    ``"grad_norm/layers.0.weight"``; :meth:`plot` leaves them out unless
    asked for.

    Examples
    --------
    >>> from sklears_neural.core.history import History
    >>> history = History([{"epoch": 1, "train_loss": 0.5},
    ...                    {"epoch": 2, "train_loss": 0.25, "valid_score": 0.9}])
    >>> history.column("train_loss")
    [0.5, 0.25]
    >>> History.from_json(history.to_json()) == history
    True
    >>> frame = history.to_frame()
    >>> frame.index.name, list(frame.columns), frame.shape
    ('epoch', ['train_loss', 'valid_score'], (2, 2))
    """

    def column(self, key):
        """Values of ``key`` over the epochs that recorded it.

        Parameters
        ----------
        key : str
            A record key such as ``"train_loss"`` or ``"valid_score"``.

        Returns
        -------
        list of float
        """
        return [record[key] for record in self if key in record]

    def to_frame(self):
        """The history as a pandas DataFrame, one row per epoch.

        Returns
        -------
        frame : pandas.DataFrame of shape (n_epochs, n_keys - 1)
            Indexed by ``"epoch"``; one column per other record key, in
            order of first appearance. An epoch that did not record a key
            holds NaN there.
        """
        import pandas as pd

        columns = [key for key in _record_keys(self) if key != "epoch"]
        frame = pd.DataFrame.from_records(list(self), columns=["epoch", *columns])
        if frame["epoch"].isna().any():
            # Records made without an "epoch" key are numbered from 1.
            frame["epoch"] = range(1, len(frame) + 1)
        return frame.set_index(frame["epoch"].astype("int64").rename("epoch")).drop(
            columns="epoch"
        )

    def plot(self, keys=None, ax=None):
        """Plot record values against the epoch.

        Parameters
        ----------
        keys : str, sequence of str or None, default=None
            Record keys to draw. ``None`` draws every numeric key except
            ``"epoch"`` and namespaced keys (those holding a ``"/"``).
        ax : matplotlib.axes.Axes or None, default=None
            Where to draw; a new figure's axes if ``None``.

        Returns
        -------
        ax : matplotlib.axes.Axes
            One line per key, labelled with the key, x axis labelled "epoch".

        Raises
        ------
        ImportError
            If matplotlib is missing (install the ``sklears-neural[plot]``
            extra).
        KeyError
            If a key was never recorded; the message lists those that were.
        """
        if ax is None:
            ax = _import_pyplot().subplots()[1]
        frame = self.to_frame()
        if keys is None:
            keys = [
                key for key in frame.columns
                if "/" not in key and any(_is_number(v) for v in self.column(key))
            ]
        elif isinstance(keys, str):
            keys = [keys]
        unknown = [key for key in keys if key not in frame.columns]
        if unknown:
            raise KeyError(
                f"Keys {unknown} are not in this history. Recorded keys: "
                f"{sorted(frame.columns)}."
            )
        for key in keys:
            values = frame[key].dropna()
            ax.plot(values.index.to_numpy(), values.to_numpy(dtype=float), label=key)
        ax.set_xlabel("epoch")
        if keys:
            ax.legend()
        return ax

    def to_json(self):
        """The history as a JSON string: a list of objects, one per epoch.

        Non-finite floats are written as ``NaN``, ``Infinity`` and
        ``-Infinity``, as Python's :mod:`json` does, so they read back as
        they were.

        Returns
        -------
        str

        Raises
        ------
        TypeError
            If a value is not a plain Python number, string, bool or None
            (a tensor or numpy array slipped in).
        """
        return json.dumps(list(self))

    @classmethod
    def from_json(cls, text):
        """Rebuild a history from :meth:`to_json`'s output.

        Parameters
        ----------
        text : str or bytes
            A JSON list of objects.

        Returns
        -------
        History

        Raises
        ------
        ValueError
            If ``text`` is not a JSON list of objects.
        """
        records = json.loads(text)
        if not isinstance(records, list) or not all(
            isinstance(record, dict) for record in records
        ):
            raise ValueError(
                "History.from_json expects a JSON list of objects, one per epoch "
                "(the output of History.to_json); got "
                f"{type(records).__name__}."
            )
        return cls(records)
