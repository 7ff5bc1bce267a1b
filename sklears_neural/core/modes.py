"""Who may set a module's training flags: the rule that makes prediction thread-safe.

``nn.Module`` keeps its mode (``training``) as plain flags on every layer, and
dropout, batch normalization and spectral normalization read them in
``forward``. A prediction that flips them to evaluation and back while another
thread also predicts (or trains) can run a forward pass in training mode:
wrong labels under dropout, and batch-norm running statistics overwritten
for good. So the flags have one owner at a time:

- A fitted module **rests in evaluation mode**. ``fit`` and ``partial_fit``
  leave it there, and the first prediction puts a module that arrived in
  training mode (just unpickled or loaded, or set by the user) into it for
  good; it never flips it back. Any number of threads then predict at once
  without writing anything the others read.
- A fit **owns** its module while it runs (:func:`training`): only its thread
  switches the flags, and a prediction from that thread (a callback) restores
  them afterwards. A fit waits for predictions already running on its module
  to end before it starts, and predictions from other threads during the fit
  run on a snapshot of the weights instead of the module (see
  :func:`predicting`), so they never disturb the training.

Nothing here touches a module's weights or keeps a module alive.
"""

import contextlib
import threading

__all__ = ["predicting", "training"]

# Keyed by id(module): an entry exists while its module is in use (a fit
# runs, or a prediction), so the module is alive and its id its own. (The
# exception: the ident a Ctrl-C may leave behind, below, stays until that
# thread fits the module.) Plain dicts under one plain lock: a prediction
# pays ~1 us for this.
_LOCK = threading.Lock()
# Signalled when the last prediction on a module ends, or a fit does.
_CHANGED = threading.Condition(_LOCK)
_OWNERS = {}  # id(module) -> ident of the thread whose fit owns it
# id(module) -> thread idents of the predictions running on it outside any
# fit, one per prediction. A Ctrl-C can land between a prediction's start
# and end and leave its ident behind; a fit ignores its own thread's (that
# thread is not predicting while it fits), so a notebook never hangs on one.
_READERS = {}
_WAITING_FITS = [0]  # fits waiting for predictions to end: worth a notify

#: What :func:`predicting` returns.
FREE, OWN_FIT, OTHER_FIT = "free", "own fit", "other fit"


@contextlib.contextmanager
def training(module):
    """Make the calling thread's fit the owner of ``module``'s flags.

    Waits for predictions already running on ``module`` to finish, and puts
    it in evaluation mode when the fit ends, however it ends.

    Parameters
    ----------
    module : torch.nn.Module
    """
    key, me = id(module), threading.get_ident()
    with _CHANGED:
        _WAITING_FITS[0] += 1
        try:
            _CHANGED.wait_for(
                lambda: all(reader == me for reader in _READERS.get(key, ()))
            )
        finally:
            _WAITING_FITS[0] -= 1
        # What is left of this thread's predictions was left by a Ctrl-C.
        _READERS.pop(key, None)
        previous = _OWNERS.get(key)
        _OWNERS[key] = me
    try:
        yield
    finally:
        with _LOCK:
            module.eval()
            if previous is None:
                del _OWNERS[key]
            else:
                _OWNERS[key] = previous
            _CHANGED.notify_all()


class predicting:
    """Count a prediction on ``module`` and say how it may use the module.

    A context manager (a class rather than a generator: it runs on every
    prediction, and a generator-based one costs a few microseconds more).

    Parameters
    ----------
    module : torch.nn.Module
    training_layers : callable
        ``training_layers() -> list`` of the layers in training mode.

    Returns
    -------
    situation : str
        What ``with`` binds. :data:`FREE`: no fit runs; the module is in
        evaluation mode (put there now, for good, if it was not) and stays
        so until this prediction ends. :data:`OWN_FIT`: a fit of this thread
        owns it (a callback predicts); the caller switches the flags and
        restores them. :data:`OTHER_FIT`: another thread's fit owns it; the
        caller must not run the module itself.
    """

    __slots__ = ("key", "training_layers", "situation")

    def __init__(self, module, training_layers):
        self.key = id(module)
        self.training_layers = training_layers

    def __enter__(self):
        key = self.key
        with _LOCK:
            owner = _OWNERS.get(key)
            if owner is None:
                self.situation = FREE
                for layer in self.training_layers():
                    # The resting state of a fitted module; every thread
                    # writes the same value, and no one writes True back.
                    layer.training = False
                _READERS.setdefault(key, []).append(threading.get_ident())
            elif owner == threading.get_ident():
                self.situation = OWN_FIT
            else:
                self.situation = OTHER_FIT
        return self.situation

    def __exit__(self, *exc_info):
        if self.situation == FREE:
            key = self.key
            with _LOCK:
                readers = _READERS[key]
                readers.remove(threading.get_ident())
                if not readers:
                    del _READERS[key]
                if _WAITING_FITS[0]:
                    _CHANGED.notify_all()
        return False
