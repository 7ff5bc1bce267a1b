"""Bernoulli Restricted Boltzmann Machine, a drop-in for scikit-learn's, in torch."""

import time
import zlib
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import gen_batches
from sklearn.utils.validation import check_is_fitted, validate_data

from sklears_neural.core._compat import Interval, _fit_context
from sklears_neural.core.data import as_tensor
from sklears_neural.core.persistence import SaveLoadMixin
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import resolve_device
from sklears_neural.core.seeding import torch_generator

__all__ = ["BernoulliRBM"]

_FLOATS = (np.float64, np.float32)
#: CPU fits whose products have at most this many multiply-adds
#: (``batch_size * n_components * n_features``) run :class:`_CPUChains`.
#: Measured on 2 shared cores: at 64,000 (digits, batch 10, 100 components)
#: it fits in half the time of the torch step; at 6.5 million (256 x 256,
#: batch 100) torch's BLAS is as fast or faster, and NumPy's threaded
#: products held 10 MiB more memory.
_NUMPY_MAX_MACS = 2**20
# Dense elements per block when a sparse input is densified for inference.
_BLOCK_ELEMENTS = 2**22


def _torch_dtype(np_dtype):
    return torch.float64 if np_dtype == np.float64 else torch.float32


def _dense(X, device, dtype):
    return as_tensor(X.toarray() if sp.issparse(X) else X, dtype, device)


def _blocks(X, device, dtype):
    """Yield ``(rows, tensor)``; sparse X is densified a block of rows at a time."""
    n_samples, n_features = X.shape
    step = max(1, _BLOCK_ELEMENTS // n_features) if sp.issparse(X) else n_samples
    for rows in gen_batches(n_samples, step):
        yield rows, _dense(X[rows], device, dtype)


def _mean_hiddens(v, W, b_h):
    """P(h=1 | v), shape (n_samples, n_components)."""
    return torch.sigmoid(torch.addmm(b_h, v, W.T))


def _mean_visibles(h, W, b_v):
    """P(v=1 | h), shape (n_samples, n_features)."""
    return torch.sigmoid(torch.addmm(b_v, h, W))


def _bernoulli(p, generator):
    # scikit-learn's rule, float64 uniforms < p, whatever p's dtype: a float32
    # fit then follows the float64 fit's chain instead of another stream.
    u = torch.rand(p.shape, generator=generator, dtype=torch.float64, device=p.device)
    return (u < p).to(p.dtype)


def _free_energy(v, W, b_h, b_v):
    """F(v) = -v.b_v - sum_j log(1 + exp(v.W_j + b_h_j)), shape (n_samples,)."""
    zero = v.new_zeros(())
    return -(v @ b_v) - torch.logaddexp(zero, torch.addmm(b_h, v, W.T)).sum(dim=1)


def _pseudo_likelihood(v, flip, W, b_h, b_v):
    """n_features * log P(v_i | v_-i) for the bit ``flip[k]`` of each row ``k``."""
    rows = torch.arange(v.shape[0], device=v.device)
    v_flipped = v.clone()
    v_flipped[rows, flip] = 1 - v_flipped[rows, flip]
    gap = _free_energy(v, W, b_h, b_v) - _free_energy(v_flipped, W, b_h, b_v)
    # log(sigmoid(x)) = -log(1 + exp(-x)), written to stay finite for large |x|.
    return -v.shape[1] * torch.logaddexp(v.new_zeros(()), gap)


class _CPUChains:
    """PCD sweeps on the CPU: NumPy's BLAS for the products, buffers made once.

    At scikit-learn's batch size (10) each product is a few thousand
    multiply-adds, and what a step costs is the calls around them: torch's
    BLAS runs even such products on its thread pool, which on a busy
    machine waits for a descheduled thread (~50-100 us per product with two
    threads, against ~5 us on one), and every torch call allocates and
    dispatches. Here each step is 13 calls on preallocated arrays, with
    NumPy's BLAS, which keeps small products on the calling thread (as
    scikit-learn does); the sigmoids and comparisons run in torch on views
    of the same memory.

    The biases ride in the weight matrix: ``P`` is ``[[W, b_h], [b_v, .]]``,
    of shape (n_components + 1, n_features + 1). A visible batch carries a
    column of ones, so ``[v, 1] @ P[:n_components].T`` is ``v W^T + b_h``;
    the chains carry one too, so ``[h, 1] @ P[:, :n_features]`` is
    ``h W + b_v``; and one product of the stacked, signed, scaled batches,
    ``S_h^T S_v``, is the whole update of ``W``, ``b_h`` and ``b_v``. The
    corner ``P[-1, -1]`` is never read.

    The uniforms of a run of steps come from one ``torch.rand`` call: on the
    CPU, one call of ``n`` values draws what ``k`` calls of ``n / k`` would,
    so the chains are those of the per-step draws of ``_pcd_step``.
    """

    #: Uniforms per ``torch.rand`` call at most (256 KiB of float64): bounds
    #: the memory; at batch 10 and 64 + 100 units a call serves 20 steps.
    DRAW = 2**15

    def __init__(self, W, b_h, b_v, h):
        n_components, n_features = W.shape
        batch_size = h.shape[0]
        dtype = W.numpy().dtype
        self.shape = batch_size, n_components, n_features
        P = self.P = np.zeros((n_components + 1, n_features + 1), dtype=dtype)
        P[:n_components, :n_features] = W.numpy()
        P[:n_components, n_features] = b_h.numpy()
        P[n_components, :n_features] = b_v.numpy()
        # Rows: the batch_size negative (chain) samples, then the positive
        # batch (the last one may be short), so every slice is contiguous.
        self.S_v = np.ones((2 * batch_size, n_features + 1), dtype=dtype)
        self.S_h = np.empty((2 * batch_size, n_components + 1), dtype=dtype)
        self.h = np.ones((batch_size, n_components + 1), dtype=dtype)
        self.h[:, :n_components] = h.numpy()
        self.p_h = np.empty((batch_size, n_components), dtype=dtype)
        self.p_v = np.empty((batch_size, n_features), dtype=dtype)
        self.G = np.empty_like(P)
        self.lr = None
        # Torch views made once: torch.from_numpy costs ~1 us a call.
        self.sig_h, self.sig_v = torch.from_numpy(self.p_h), torch.from_numpy(self.p_v)

    def parameters(self):
        """``W, b_h, b_v, h`` as torch tensors sharing the buffers' memory."""
        nc, nf = self.shape[1:]
        P = torch.from_numpy(self.P)
        return P[:nc, :nf], P[:nc, nf], P[nc, :nf], torch.from_numpy(self.h[:, :nc])

    def sweep(self, X, batches, learning_rate, generator):
        """One pass of PCD steps over the row slices ``batches`` of ``X``."""
        B, nc, nf = self.shape
        per_step = B * (nf + nc)
        steps_per_draw = max(1, self.DRAW // per_step)
        for first in range(0, len(batches), steps_per_draw):
            chunk = batches[first:first + steps_per_draw]
            u = torch.rand(
                (len(chunk), per_step), generator=generator, dtype=torch.float64
            ).numpy()
            for rows, draws in zip(chunk, u):
                self._step(X[rows], learning_rate, draws)
            del u  # before the next draw: one chunk alive at a time

    def _step(self, v_pos, learning_rate, draws):
        B, nc, nf = self.shape
        P, S_v, S_h, h = self.P, self.S_v, self.S_h, self.h
        p_h, p_v = self.p_h, self.p_v
        b = v_pos.shape[0]
        S_pos = S_v[B:B + b]
        S_pos[:, :nf] = v_pos.toarray() if sp.issparse(v_pos) else v_pos
        # The positive batch size, not batch_size: the last slice may be short.
        lr = float(learning_rate) / b
        if lr != self.lr:
            S_h[:B, nc], S_h[B:, nc] = -lr, lr  # scales the sums of v: b_v's row
            self.lr = lr
        p_pos = p_h[:b]
        np.dot(S_pos, P[:nc].T, out=p_pos)
        (self.sig_h if b == B else self.sig_h[:b]).sigmoid_()
        np.multiply(p_pos, lr, out=S_h[B:B + b, :nc])
        np.dot(h, P[:, :nf], out=p_v)
        self.sig_v.sigmoid_()
        # Float64 uniforms < p, scikit-learn's rule (see _bernoulli).
        np.less(draws[:B * nf].reshape(B, nf), p_v, out=S_v[:B, :nf])
        np.dot(S_v[:B], P[:nc].T, out=p_h)
        self.sig_h.sigmoid_()
        np.less(draws[B * nf:].reshape(B, nc), p_h, out=h[:, :nc])
        np.multiply(p_h, -lr, out=S_h[:B, :nc])
        np.dot(S_h[:B + b].T, S_v[:B + b], out=self.G)
        P += self.G


def _generator_state(generator):
    """``(device, byte state)`` of a generator; pickles hold this pair."""
    if isinstance(generator, torch.Generator):
        return str(generator.device), generator.get_state().numpy()
    return generator


@register_estimator
class BernoulliRBM(
    SaveLoadMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Bernoulli Restricted Boltzmann Machine (RBM), computed with PyTorch.

    Binary visible and hidden units, trained by Stochastic Maximum Likelihood,
    also known as Persistent Contrastive Divergence (PCD). The algorithm,
    parameters and fitted attributes are those of
    :class:`sklearn.neural_network.BernoulliRBM`; the arithmetic runs in torch
    on ``device``, in the dtype of ``X`` (float32 or float64). On the CPU,
    with small products (scikit-learn's default batch size of 10),
    :meth:`fit` runs its steps' matrix products with NumPy's BLAS instead,
    on buffers made once, and draws many steps' random numbers in one call:
    a step is then a dozen calls, not a few dozen.

    Parameters
    ----------
    n_components : int, default=256
        Number of binary hidden units.

    learning_rate : float, default=0.1
        The learning rate for weight updates, divided by the number of
        samples in each mini-batch. Reasonable values are in the
        ``10**[0., -3.]`` range.

    batch_size : int, default=10
        Number of samples per mini-batch, and number of persistent chains.

    n_iter : int, default=10
        Number of sweeps over the training set during :meth:`fit`.

    verbose : int, default=0
        If non-zero, print the mean pseudo-likelihood after each sweep.

    random_state : int, RandomState instance or None, default=None
        Seeds the local ``torch.Generator`` used for the initial weights and
        Gibbs sampling (created by each :meth:`fit` and by the first
        :meth:`partial_fit`) and, afresh on every call, the bits flipped by
        :meth:`score_samples`. Pass an int for reproducible results.

    device : {"cpu", "cuda", "auto"} or str, default="cpu"
        Where to compute: ``"cuda:<index>"`` picks a GPU, ``"auto"`` uses CUDA
        when available. Random streams differ between CPU and CUDA.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Weight matrix between hidden (rows) and visible (columns) units.

    intercept_hidden_ : ndarray of shape (n_components,)
        Biases of the hidden units.

    intercept_visible_ : ndarray of shape (n_features,)
        Biases of the visible units.

    h_samples_ : ndarray of shape (batch_size, n_components)
        Hidden states of the persistent Gibbs chains.

    n_features_in_ : int
        Number of features seen during :term:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`. Defined only when `X`
        has feature names that are all strings.

    See Also
    --------
    sklearn.neural_network.BernoulliRBM : The NumPy implementation this mirrors.

    Notes
    -----
    The energy is :math:`E(v, h) = -v^T b_v - h^T b_h - h^T W v`. Each
    mini-batch of ``m`` rows moves ``W`` by ``learning_rate / m`` times
    :math:`P(h|v_+)^T v_+ - P(h|v_-)^T v_-`, where :math:`v_-` is one Gibbs
    step from the persistent chains ``h_samples_``. Batches are contiguous,
    unshuffled slices of ``X``, as in scikit-learn.

    Examples
    --------
    >>> import numpy as np
    >>> from sklears_neural.models.rbm import BernoulliRBM
    >>> X = np.array([[0, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    >>> model = BernoulliRBM(n_components=2, random_state=0).fit(X)
    >>> model.transform(X).shape
    (4, 2)
    >>> model.get_feature_names_out()
    array(['bernoullirbm0', 'bernoullirbm1'], dtype=object)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_iter": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        # Names are checked by resolve_device in fit, as for the MLPs.
        "device": [str, torch.device],
    }

    def __init__(
        self,
        n_components=256,
        *,
        learning_rate=0.1,
        batch_size=10,
        n_iter=10,
        verbose=0,
        random_state=None,
        device="cpu",
    ):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.device = device

    @classmethod
    def from_sklearn(cls, estimator, *, device="cpu"):
        """Build an estimator holding a fitted scikit-learn RBM's parameters.

        Parameters
        ----------
        estimator : sklearn.neural_network.BernoulliRBM
            A fitted scikit-learn RBM; its arrays are copied.

        device : str, default="cpu"
            The ``device`` of the returned estimator.

        Returns
        -------
        rbm : BernoulliRBM
            A fitted estimator; its random stream starts from ``random_state``.
        """
        from sklearn.neural_network import BernoulliRBM as SklearnRBM

        if not isinstance(estimator, SklearnRBM):
            raise TypeError(
                "from_sklearn expects a sklearn.neural_network.BernoulliRBM, got "
                f"{type(estimator).__name__}."
            )
        check_is_fitted(estimator)
        rbm = cls(**estimator.get_params(deep=False), device=device)
        for name in ("components_", "intercept_hidden_", "intercept_visible_", "h_samples_"):
            setattr(rbm, name, np.array(getattr(estimator, name), order="C"))
        rbm.n_features_in_ = estimator.n_features_in_
        if hasattr(estimator, "feature_names_in_"):
            rbm.feature_names_in_ = estimator.feature_names_in_.copy()
        rbm._n_features_out = rbm.components_.shape[0]
        return rbm

    def _device(self):
        device = resolve_device(self.device)
        if device.type == "cuda" and device.index is None:
            # A generator made on "cuda" reports "cuda:<current>"; compare like with like.
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def _rng(self, device):
        """The kept generator, on ``device``; made from ``random_state`` if none."""
        generator = getattr(self, "_generator", None)
        if generator is None:
            generator = torch_generator(self.random_state, device=device)
        elif not isinstance(generator, torch.Generator) or generator.device != device:
            old_device, state = _generator_state(generator)
            generator = torch.Generator(device=device)
            if torch.device(old_device) == device:
                generator.set_state(torch.tensor(state))
            else:
                # CPU and CUDA states are not interchangeable: reseed
                # deterministically from the old state instead.
                generator.manual_seed(zlib.crc32(np.asarray(state).tobytes()))
        self._generator = generator
        return generator

    def _params(self, device, dtype, chains=False):
        names = ["components_", "intercept_hidden_", "intercept_visible_"]
        names += ["h_samples_"] if chains else []
        return [torch.tensor(getattr(self, n), dtype=dtype, device=device) for n in names]

    def _store(self, W, b_h, b_v, h):
        # Copies: the tensors may be views of _CPUChains' buffers.
        for name, tensor in zip(
            ("components_", "intercept_hidden_", "intercept_visible_", "h_samples_"),
            (W, b_h, b_v, h),
        ):
            setattr(self, name, np.array(tensor.cpu().numpy(), order="C"))

    def _init_params(self, n_features, device, dtype, generator):
        shape = (self.n_components, n_features)
        # Drawn in float64 then cast, as scikit-learn does (see _bernoulli).
        W = (torch.randn(shape, generator=generator, dtype=torch.float64, device=device)
             * 0.01).to(dtype)
        b_h = torch.zeros(self.n_components, dtype=dtype, device=device)
        b_v = torch.zeros(n_features, dtype=dtype, device=device)
        h = torch.zeros((self.batch_size, self.n_components), dtype=dtype, device=device)
        self._n_features_out = self.n_components
        return W, b_h, b_v, h

    def _pcd_step(self, v_pos, W, b_h, b_v, h, generator):
        """One PCD update in place on W, b_h, b_v; returns the new chain states."""
        h_pos = _mean_hiddens(v_pos, W, b_h)
        v_neg = _bernoulli(_mean_visibles(h, W, b_v), generator)
        h_neg = _mean_hiddens(v_neg, W, b_h)
        # The positive batch size, not batch_size: the last slice may be short.
        lr = float(self.learning_rate) / v_pos.shape[0]
        W.add_(h_pos.T @ v_pos - h_neg.T @ v_neg, alpha=lr)
        b_h.add_(h_pos.sum(dim=0) - h_neg.sum(dim=0), alpha=lr)
        b_v.add_(v_pos.sum(dim=0) - v_neg.sum(dim=0), alpha=lr)
        return _bernoulli(h_neg, generator)

    def __getstate__(self):
        # object.__getstate__ returns the live __dict__: copy before editing.
        state = dict(super().__getstate__())
        if state.get("_generator") is not None:
            # Bytes, not the generator: a CUDA generator cannot be unpickled
            # on a CPU-only machine.
            state["_generator"] = _generator_state(state["_generator"])
        return state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model to the data X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data, values in [0, 1].

        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : BernoulliRBM
            The fitted model.
        """
        device = self._device()  # a bad device fails before any state is set
        X = validate_data(self, X, accept_sparse="csr", dtype=_FLOATS)
        dtype = _torch_dtype(X.dtype)
        self._generator = generator = torch_generator(self.random_state, device=device)
        W, b_h, b_v, h = self._init_params(X.shape[1], device, dtype, generator)
        batches = list(gen_batches(X.shape[0], self.batch_size))
        macs = self.batch_size * self.n_components * X.shape[1]
        if device.type == "cpu" and macs <= _NUMPY_MAX_MACS:
            chains = _CPUChains(W, b_h, b_v, h)
            W, b_h, b_v, h = chains.parameters()
        else:
            chains = None
            data = X if sp.issparse(X) else _dense(X, device, dtype)
        begin = time.time()
        for iteration in range(1, self.n_iter + 1):
            if chains is not None:
                chains.sweep(X, batches, self.learning_rate, generator)
            else:
                for rows in batches:
                    v_pos = (
                        _dense(data[rows], device, dtype)
                        if sp.issparse(data) else data[rows]
                    )
                    h = self._pcd_step(v_pos, W, b_h, b_v, h, generator)
            if self.verbose:
                end = time.time()
                score = self._score(X, W, b_h, b_v).mean().item()
                print(
                    "[%s] Iteration %d, pseudo-likelihood = %.2f, time = %.2fs"
                    % (type(self).__name__, iteration, score, end - begin)
                )
                begin = end
        self._store(W, b_h, b_v, h)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Fit the model to one mini-batch, continuing the persistent chains.

        As in scikit-learn, all of ``X`` is a single mini-batch. The first call
        initializes the parameters in ``X``'s dtype; later calls keep it.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data, values in [0, 1].

        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : BernoulliRBM
            The fitted model.
        """
        first_pass = not hasattr(self, "components_")
        device = self._device()
        X = validate_data(self, X, accept_sparse="csr", dtype=_FLOATS, reset=first_pass)
        if first_pass:
            dtype = _torch_dtype(X.dtype)
            self._generator = generator = torch_generator(self.random_state, device=device)
            W, b_h, b_v, h = self._init_params(X.shape[1], device, dtype, generator)
        else:
            dtype = _torch_dtype(self.components_.dtype)
            generator = self._rng(device)
            W, b_h, b_v, h = self._params(device, dtype, chains=True)
        h = self._pcd_step(_dense(X, device, dtype), W, b_h, b_v, h, generator)
        self._store(W, b_h, b_v, h)
        return self

    def _validate_fitted(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False, dtype=_FLOATS)
        return X, self._device(), _torch_dtype(X.dtype)

    def transform(self, X):
        """Compute the hidden layer activation probabilities, P(h=1|v=X).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The data to be transformed.

        Returns
        -------
        h : ndarray of shape (n_samples, n_components)
            Latent representations of the data, in ``X``'s float dtype.
        """
        X, device, dtype = self._validate_fitted(X)
        W, b_h, _ = self._params(device, dtype)
        out = [_mean_hiddens(v, W, b_h) for _, v in _blocks(X, device, dtype)]
        return torch.cat(out).cpu().numpy()

    def to_onnx(self, path=None):
        """Export :meth:`transform` to ONNX: ``sigmoid(X W^T + b_h)``.

        The graph takes ``X``, float32 of shape (n_samples, n_features_in_)
        with a dynamic batch axis, and outputs ``transformed``, computed in
        the dtype of ``components_`` (``W``; ``b_h`` is ``intercept_hidden_``).
        Needs ``pip install sklears-neural[onnx]``.

        Parameters
        ----------
        path : str or os.PathLike, default=None
            Also write the model to this file.

        Returns
        -------
        model : bytes
            A serialized ``onnx.ModelProto``.
        """
        check_is_fitted(self)
        from sklears_neural.core.export import rbm_to_onnx

        return rbm_to_onnx(self, path)

    def gibbs(self, v):
        """Perform one Gibbs sampling step from the visible layer.

        Draws from the estimator's generator, so successive calls differ.

        Parameters
        ----------
        v : {array-like, sparse matrix} of shape (n_samples, n_features)
            Values of the visible layer to start from.

        Returns
        -------
        v_new : ndarray of shape (n_samples, n_features), dtype=bool
            Values of the visible layer after one Gibbs step.
        """
        v, device, dtype = self._validate_fitted(v)
        generator = self._rng(device)
        W, b_h, b_v = self._params(device, dtype)
        # Sample whole layers, not block by block, so the draws (and results)
        # do not depend on how a sparse input was split into blocks.
        p_h = torch.cat([_mean_hiddens(b, W, b_h) for _, b in _blocks(v, device, dtype)])
        h = _bernoulli(p_h, generator)
        return _bernoulli(_mean_visibles(h, W, b_v), generator).bool().cpu().numpy()

    def _score(self, X, W, b_h, b_v):
        device, dtype = W.device, W.dtype
        # A fresh stream per call, as scikit-learn does: scores repeat for an
        # int random_state, and verbose scoring leaves the fit's stream alone.
        generator = torch_generator(self.random_state, device=device)
        flip = torch.randint(X.shape[1], (X.shape[0],), generator=generator, device=device)
        out = [
            _pseudo_likelihood(v, flip[rows], W, b_h, b_v)
            for rows, v in _blocks(X, device, dtype)
        ]
        return torch.cat(out)

    def score_samples(self, X):
        """Compute the pseudo-likelihood of X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Values of the visible layer. Must be all-boolean (not checked).

        Returns
        -------
        pseudo_likelihood : ndarray of shape (n_samples,)
            Value of the pseudo-likelihood (proxy for likelihood).

        Notes
        -----
        One random bit ``i`` of each sample is flipped; the free energy gap
        gives ``n_features * log P(v_i | v_-i)``, so results vary with the bit.
        """
        X, device, dtype = self._validate_fitted(X)
        return self._score(X, *self._params(device, dtype)).cpu().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
