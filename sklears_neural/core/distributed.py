"""Data-parallel training over ``torch.distributed`` (``strategy="ddp"``).

Every process (rank) that ``torchrun`` starts runs the same script, loads the
same ``X, y`` and calls the same ``fit``. The ranks agree on one permutation
per epoch (rank 0's, broadcast), each runs the forward and backward pass on
its contiguous share of every batch, and the gradients are summed across the
ranks before clipping and the optimizer step, so every rank takes the same
step on the same weights: the step single-process training takes on the
whole batch, to rounding.

Exactness. A rank's objective is the mean over its share, ``L_r``; scaled by
its share of the batch, ``n_r / n`` (of the sample weight where there is
one), the ranks' gradients sum to the gradient of the batch mean. A weight
penalty is part of every rank's objective, so each rank counts ``1 / W`` of
it (:func:`~sklears_neural.core.regularization.penalty_share`), and it is
counted once in the sum.

Why not the ``DistributedDataParallel`` module wrapper: it averages gradients
over the ranks (right only for equal shares, and an epoch's last batch
rarely splits evenly), it needs the forward pass to go through the wrapper
(families' ``_forward`` reach into their modules' parts, and the MLP's fused
step has no module forward at all), and it renames every weight. This module
is the collective DDP's reducer runs, an all-reduce of the gradients (one flat
buffer per step, as DDP's buckets), with weights that make it exact.

What it leaves per rank: dropout, noise and augmentation draws come from each
rank's own generator (as with DDP), and batch normalization uses the
statistics of the rank's share (as DDP without ``SyncBatchNorm``); buffers
such as running statistics are broadcast from rank 0 after each step.
"""

import os

import torch
import torch.distributed as dist

__all__ = ["DataParallel", "is_main_process"]

#: The environment variables ``torchrun`` sets for each process it starts.
_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

_HOW_TO_LAUNCH = (
    "Start one process per device with torchrun, e.g. `torchrun "
    "--nproc_per_node=2 train.py` on one machine, or `torchrun --nnodes=2 "
    "--node_rank=<0|1> --master_addr=<host of rank 0> --nproc_per_node=<n> "
    "train.py` on several; see doc/scaling.md."
)


def is_main_process():
    """True outside data-parallel training and on its rank 0.

    A callback with side effects (writing files, printing) checks it, so that
    one rank does them.
    """
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _backend_for(device):
    return "nccl" if device.type == "cuda" else "gloo"


class DataParallel:
    """The collectives one data-parallel fit needs.

    Parameters
    ----------
    device : torch.device
        Where the module trains; this rank's device.

    Attributes
    ----------
    rank, world_size : int
    device : torch.device
    """

    def __init__(self, device):
        self.device = device
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    @classmethod
    def start(cls, device):
        """Join (or start) the process group ``torchrun`` describes.

        Parameters
        ----------
        device : torch.device
            The estimator's resolved device; ``cuda`` without an index
            becomes ``cuda:LOCAL_RANK``.

        Returns
        -------
        DataParallel

        Raises
        ------
        RuntimeError
            If the process was not started by a launcher and no process
            group exists: the message says how to launch.
        """
        if not dist.is_available():
            raise RuntimeError(
                "strategy='ddp' needs torch.distributed, which this build of "
                "torch lacks. Use strategy=None."
            )
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if not dist.is_initialized():
            missing = [v for v in _LAUNCHER_VARIABLES if v not in os.environ]
            if missing:
                raise RuntimeError(
                    "strategy='ddp' trains in several processes, but this one was "
                    f"not started by a launcher ({', '.join(missing)} not set) and "
                    "no torch.distributed process group exists. " + _HOW_TO_LAUNCH
                )
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=_backend_for(device))
        return cls(device)

    # -- keeping the ranks identical ------------------------------------------

    def broadcast_state(self, module, generator):
        """Rank 0's weights, buffers and generator state on every rank.

        Without a seed each rank would initialize (and draw its validation
        split) differently; with one it is a check that costs one message.
        """
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)
        if generator is not None:
            state = [generator.get_state()]
            dist.broadcast_object_list(state, src=0)
            generator.set_state(state[0])

    def broadcast_buffers(self, module):
        """Rank 0's buffers (running statistics) on every rank."""
        with torch.no_grad():
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def broadcast_order(self, order):
        """Rank 0's permutation of the epoch, in place."""
        dist.broadcast(order, src=0)
        return order

    # -- one batch -------------------------------------------------------------

    def share(self, n):
        """This rank's rows of a batch of ``n``: ``slice(start, stop)``.

        Contiguous shares whose sizes differ by at most one; a rank's share
        is empty when the batch has fewer rows than there are ranks.
        """
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def batch_shares(self, n_share, n_batch, sample_weight, *, weighted):
        """How this rank's share of a batch enters the step.

        Parameters
        ----------
        n_share, n_batch : int
            Rows of the share and of the whole batch.
        sample_weight : torch.Tensor or None
            The share's weights (None for an empty share).
        weighted : bool
            Whether the data has sample weights: then the ranks exchange
            their shares' total weight (the same on every rank).

        Returns
        -------
        fraction : float
            The share's part of the batch (of its rows, or of its weight):
            the factor of its gradients in the sum.
        penalty : float
            ``1 / k`` for the ``k`` ranks whose shares have rows (and
            weight): each counts that much of the weight penalty.
        active : bool
            Whether this rank runs the step on rows at all.
        """
        if not weighted:
            return n_share / n_batch, 1.0 / min(self.world_size, n_batch), n_share > 0
        local = 0.0 if sample_weight is None else float(sample_weight.sum())
        totals = torch.tensor([local, float(local > 0)], dtype=torch.float64,
                              device=self.device)
        dist.all_reduce(totals)
        total, active_ranks = totals.tolist()
        return local / total, 1.0 / active_ranks, local > 0

    def all_reduce_gradients(self, params, fraction):
        """Each gradient becomes the sum over ranks of ``fraction * grad``.

        One flat buffer, one collective; a parameter without a gradient (an
        empty share, an unused branch) contributes zeros.
        """
        grads = [
            p.grad if p.grad is not None else torch.zeros_like(p) for p in params
        ]
        flat = torch.cat([g.reshape(-1) for g in grads])
        if fraction != 1.0:
            flat.mul_(fraction)
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            # Views of the one buffer: no copy back.
            p.grad = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()

    def all_reduce_sum(self, tensor):
        """The sum over ranks of a tensor, in place."""
        dist.all_reduce(tensor)
        return tensor
