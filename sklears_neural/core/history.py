"""Per-epoch training records."""

__all__ = ["History"]


class History(list):
    """A list of per-epoch dicts of plain Python numbers.

    ``history_[-1]["train_loss"]`` is the last epoch's training loss. Values
    are Python floats and ints (never tensors), so a history pickles and dumps
    to JSON as it is.
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
