"""A network's trainable parameters in one contiguous buffer, their gradients in another.

A small network's training step is a handful of matrix products wrapped in
per-tensor work: the weight penalty reduces and scales every weight matrix,
clipping takes every gradient's norm, and the optimizer's fused kernel is
called on lists of a dozen tensors. With the parameters laid out back to
back in one buffer (the weight matrices first, then the vectors), each of
those becomes one operation on one tensor: the penalty's value is a ``dot``
over the weights' part; with the gradients in a second buffer, clipping is
one norm and the optimizer runs its kernel once on the whole buffer.

:meth:`FlatParameters.flatten` moves the parameters into the buffer in
place: each ``nn.Parameter`` stays the same object (modules, optimizers and
their state still find it) and keeps its values; only its ``.data`` becomes
a view of the buffer. Everything that reads or writes parameters in place
(``load_state_dict``, rollback to the best epoch, data-parallel broadcasts)
keeps the layout; ``state_dict``, pickling and saved files see ordinary
tensors of the usual shapes, so files written before and after load alike.

Gradients: autograd hands each parameter a fresh gradient tensor, which it
can give without a copy, and a parameter that takes no part in a step keeps
``grad=None`` (an optimizer then leaves it alone). Gradients in the buffer
would cost a zeroing pass and an addition per parameter and lose that
distinction, so they are used by the steps that compute gradients
themselves (:class:`~sklears_neural.core.fused.FusedMLPStep`): they write
into :meth:`FlatParameters.gradients`, and the optimizer step then runs on
the two buffers (:func:`~sklears_neural.core.optim.direct_step`).
"""

import weakref

import torch

__all__ = ["ALIGN_BYTES", "FLAT_MAX_BYTES", "FlatParameters", "weight_layout"]

# id(first weight matrix) -> the FlatParameters that laid it out, so that a
# weight penalty given the list of weights finds their one slice.
_LAYOUTS = {}

#: Most bytes of parameters laid out in one buffer. Flattening copies the
#: parameters once (for a moment both copies are held), and past a few
#: million parameters the per-tensor costs it saves are lost in the
#: arithmetic; larger networks keep their own tensors.
FLAT_MAX_BYTES = 64 * 2**20

#: Each parameter starts on a multiple of this many bytes of the buffer, as a
#: tensor of its own would (torch's CPU allocator aligns to 64 bytes). Kernels
#: take vectorized paths by alignment, so an unaligned view can round one
#: element differently; aligned, every kernel computes what it computed
#: before, bit for bit. The gaps hold zeros, which every update keeps zero.
ALIGN_BYTES = 64


def _offsets(params, element_size):
    """Each parameter's aligned start in the buffer, and the buffer's length."""
    align = max(1, ALIGN_BYTES // element_size)
    offsets, end = [], 0
    for p in params:
        start = -(-end // align) * align
        offsets.append(start)
        end = start + p.numel()
    return offsets, -(-end // align) * align


class FlatParameters:
    """Trainable parameters laid out in one buffer: weight matrices first, then vectors.

    Build it with :meth:`flatten`.

    Attributes
    ----------
    params : list of torch.nn.Parameter
        In buffer order.
    data : torch.Tensor
        The 1-D buffer the parameters are views of (each aligned to
        :data:`ALIGN_BYTES`; the gaps between them are zeros).
    weights : torch.Tensor
        The leading part of :attr:`data` that holds the parameters with two
        or more dimensions, those a weight penalty applies to (see
        :func:`~sklears_neural.core.regularization.penalized_parameters`).
    weight_params : list of torch.nn.Parameter
        Those parameters, in buffer order.
    grad : torch.Tensor or None
        The gradient buffer, once :meth:`gradients` made it.
    """

    def __init__(self, params, data, offsets):
        self.params = params
        self.data = data
        self.grad = None
        self._grad_views = None
        self._offsets = dict(zip(map(id, params), offsets))
        n_weights = 0
        for p, offset in zip(params, offsets):
            if p.ndim >= 2:
                n_weights = offset + p.numel()
        self.weights = data[:n_weights]
        self.weight_params = [p for p in params if p.ndim >= 2]
        self._pointers = [p.data_ptr() for p in params]
        if self.weight_params:
            key = id(self.weight_params[0])
            _LAYOUTS[key] = weakref.ref(self, lambda ref, key=key: _forget(key, ref))

    @classmethod
    def flatten(cls, params, *, max_bytes=FLAT_MAX_BYTES):
        """Lay ``params`` out in one buffer, in place; None where that is not done.

        Not done for fewer than two parameters, parameters on several
        devices or of several dtypes, sparse, complex or non-contiguous
        ones (a ``channels_last`` kernel keeps its layout), and above
        ``max_bytes`` in all. Parameters already laid out so (by an earlier
        fit) are adopted as they are, without a copy.

        Parameters
        ----------
        params : iterable of torch.nn.Parameter
            Duplicates (tied weights) count once.
        max_bytes : int, default=FLAT_MAX_BYTES

        Returns
        -------
        FlatParameters or None
        """
        unique, seen = [], set()
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        if len(unique) < 2:
            return None
        first = unique[0]
        if any(
            p.device != first.device or p.dtype != first.dtype or p.layout != torch.strided
            or not p.dtype.is_floating_point or not p.is_contiguous()
            for p in unique
        ):
            return None
        # Weight matrices first: the penalty's part is then one slice.
        ordered = [p for p in unique if p.ndim >= 2] + [p for p in unique if p.ndim < 2]
        offsets, length = _offsets(ordered, first.element_size())
        if length * first.element_size() > max_bytes:
            return None
        data = cls._laid_out(ordered, offsets, length)
        if data is None:
            data = torch.zeros(length, dtype=first.dtype, device=first.device)
            with torch.no_grad():
                for p, offset in zip(ordered, offsets):
                    view = data[offset:offset + p.numel()].view_as(p)
                    view.copy_(p)
                    p.data = view
        return cls(ordered, data, offsets)

    @staticmethod
    def _laid_out(params, offsets, length):
        """The buffer ``params`` are already views of at ``offsets``, or None."""
        first = params[0]
        storage = first.untyped_storage()
        base = first.storage_offset() - offsets[0]
        if base < 0 or (base + length) * first.element_size() > storage.nbytes():
            return None
        for p, offset in zip(params, offsets):
            if (p.untyped_storage().data_ptr() != storage.data_ptr()
                    or p.storage_offset() != base + offset):
                return None
        with torch.no_grad():
            return first.new_empty(0).set_(storage, base, (length,))

    def intact(self):
        """Whether every parameter is still the view it was made (``.to()`` replaces it)."""
        return all(p.data_ptr() == pointer for p, pointer in zip(self.params, self._pointers))

    def views(self, buffer, params=None):
        """``{parameter: its view of buffer}`` for a buffer laid out as :attr:`data`.

        ``params`` (default: all) may name a leading part, such as
        :attr:`weight_params` of a buffer as long as :attr:`weights`.
        """
        return {
            p: buffer[self._offsets[id(p)]:self._offsets[id(p)] + p.numel()].view_as(p)
            for p in (self.params if params is None else params)
        }

    def gradients(self):
        """``{parameter: its gradient's view}`` of a gradient buffer (made on first call).

        A step that computes gradients itself writes them there and sets
        ``p.grad`` to these views (the same tensors on every call);
        :attr:`grad` then holds every gradient, zeros in the gaps.
        """
        if self.grad is None:
            self.grad = torch.zeros_like(self.data)
            self._grad_views = self.views(self.grad)
        return self._grad_views

    def grads_in_place(self, views):
        """Whether every parameter's ``.grad`` is its view of :attr:`grad`."""
        return all(p.grad is views[p] for p in self.params)


def _forget(key, ref):
    # A later layout of the same weights (the next fit) may have taken the
    # key: only this layout's own entry goes.
    if _LAYOUTS.get(key) is ref:
        del _LAYOUTS[key]


def weight_layout(params):
    """The :class:`FlatParameters` whose :attr:`~FlatParameters.weights` are ``params``.

    Parameters
    ----------
    params : list of torch.Tensor
        Weight matrices, in the order a weight penalty lists them.

    Returns
    -------
    FlatParameters or None
        None unless exactly these tensors, in this order, are laid out in
        one buffer and still are (nothing replaced them since).
    """
    if not params:
        return None
    ref = _LAYOUTS.get(id(params[0]))
    flat = None if ref is None else ref()
    if flat is None or len(flat.weight_params) != len(params):
        return None
    if any(a is not b for a, b in zip(flat.weight_params, params)) or not flat.intact():
        return None
    return flat
