"""Pickle-safe fitted state.

A pickled estimator holds numpy arrays, never torch tensors or devices:
the module is stored as its :class:`~sklears_neural.core.layers.ModuleSpec`
plus a ``state_dict`` of arrays, the optimizer as its state of arrays, the
generator as its byte state. Loading rebuilds them on the estimator's device
when this machine has it, else on the CPU, so a model fitted on a GPU loads
on a CPU-only machine.
"""

import numpy as np
import torch

from sklears_neural.core.resolve import resolve_device

__all__ = ["PicklableStateMixin", "to_numpy_tree", "to_torch_tree"]


def to_numpy_tree(obj):
    """Replace every tensor in nested dicts/lists/tuples by a numpy array."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: to_numpy_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy_tree(v) for v in obj)
    return obj


def to_torch_tree(obj):
    """Inverse of :func:`to_numpy_tree`: numpy arrays back to tensors."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        return {k: to_torch_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_torch_tree(v) for v in obj)
    return obj


def _loading_device(device_param):
    try:
        return resolve_device(device_param)
    except ValueError:
        return torch.device("cpu")


class PicklableStateMixin:
    """``__getstate__``/``__setstate__`` that turn torch state into numpy."""

    def __getstate__(self):
        # object.__getstate__ returns the live __dict__: copy before editing.
        state = dict(super().__getstate__())
        if "module_" in state:
            state["module_"] = to_numpy_tree(self.module_.state_dict())
        if state.get("_optimizer") is not None:
            state["_optimizer"] = to_numpy_tree(self._optimizer.state_dict())
        if state.get("_generator") is not None:
            state["_generator"] = self._generator.get_state().numpy()
        if state.get("_scaler") is not None:
            # A CUDA loss scaler holds device tensors; it re-calibrates in a
            # few steps, so it is not carried over.
            state["_scaler"] = None
        if state.get("_stopping") is not None and state["_stopping"].best_state:
            stopping = state["_stopping"].__class__.__new__(state["_stopping"].__class__)
            stopping.__dict__.update(state["_stopping"].__dict__)
            stopping.best_state = to_numpy_tree(stopping.best_state)
            state["_stopping"] = stopping
        return state

    def __setstate__(self, state):
        module_state = state.pop("module_", None)
        had_optimizer = "_optimizer" in state
        optimizer_state = state.pop("_optimizer", None)
        generator_state = state.pop("_generator", None)
        super().__setstate__(state)
        if generator_state is not None:
            self._generator = torch.Generator()
            self._generator.set_state(torch.from_numpy(generator_state))
        if self.__dict__.get("_stopping") is not None and self._stopping.best_state:
            self._stopping.best_state = to_torch_tree(self._stopping.best_state)
        if module_state is None:
            return
        module = self._module_spec_.build()
        # assign=True keeps the saved dtype (float32 or float64 training).
        module.load_state_dict(to_torch_tree(module_state), assign=True)
        self.module_ = module.to(_loading_device(self.device))
        if had_optimizer:
            self._optimizer = None
        if optimizer_state is not None:
            from sklears_neural.core.optim import make_optimizer

            optimizer = make_optimizer(self.module_, _SolverView(state))
            optimizer.load_state_dict(to_torch_tree(optimizer_state))
            self._optimizer = optimizer


class _SolverView:
    """The estimator settings an optimizer was built from, read from a state dict.

    The optimizer is rebuilt with the solver it was trained with, which may
    differ from the current ``solver`` parameter after ``set_params``.
    """

    def __init__(self, state):
        self.__dict__.update(state)
        self.solver = state.get("_optimizer_solver", state["solver"])
