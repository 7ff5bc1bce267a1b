"""Peak memory of one call, measured in a fresh process.

Why a fresh process: inside a process that has already trained, a new fit is
served partly from the allocators' caches (glibc's heap, torch's CPU
allocator, BLAS work buffers) and its resident set barely moves, so an
in-process reading says ~0 MiB whatever the fit allocates.

How: :class:`ForkServer` starts a server process that imports the benchmark
scripts (torch, scikit-learn, ...: ~5 s of imports here, paid once) and
computes nothing. For each measurement it forks a child: a process whose
heap is that of a fresh interpreter after the imports, in which a function of
the benchmark builds its data, warms up, and wraps the call to be measured in
:class:`PeakRSS`. No torch or BLAS thread pool exists in the server when it
forks, which is what makes forking it safe.

:class:`PeakRSS` first hands the free pages of glibc's heap back to the kernel
(``malloc_trim``), so that memory the call reuses from earlier garbage
counts, then resets the kernel's own high-water mark (``/proc/self/clear_refs``,
Linux >= 4.0) and reports ``VmHWM`` after the call minus ``VmRSS`` before it.
No sampling, so no peak is missed. Where the reset is refused, ``VmHWM`` is
the process's lifetime peak and the delta only an upper bound (reported as
``exact=False``).

Linux only (``/proc``, ``fork``), like the machines the pages are made on.
"""

import ctypes
import ctypes.util
import gc
import importlib.util
import json
import os
import resource
import subprocess
import sys
import traceback

__all__ = ["PeakRSS", "ForkServer", "rss_bytes", "settled_rss_bytes"]

_SERVER_FLAG = "--fork-server"


def _status_kib(field):
    """``field`` (``VmRSS``, ``VmHWM``) of /proc/self/status in KiB, or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def rss_bytes():
    """Current resident set size of this process in bytes (None if unknown)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def _reset_peak():
    """Set the kernel's peak-RSS mark (VmHWM, ru_maxrss) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_heap():
    """Hand the heap's free pages back to the kernel (glibc's ``malloc_trim``).

    Memory that earlier code freed (the data generator's temporaries, the
    warm-up fit) stays resident in glibc's heap, and a later allocation that
    reuses it does not raise the RSS: without this, a fit that copies its
    12 MiB input measured +0.3 MiB here. Returns whether it could be done.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):  # not glibc
        return False


def settled_rss_bytes():
    """RSS in bytes once garbage is collected and free heap pages returned:
    what the live objects occupy."""
    gc.collect()
    _release_free_heap()
    return rss_bytes()


def _peak_bytes():
    """Peak RSS in bytes: VmHWM, or ru_maxrss (KiB on Linux) where absent."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


class PeakRSS:
    """Context manager: peak resident set size during the block, above its start.

    Attributes (after the block)
    ----------------------------
    before : int
        RSS in bytes when the block started.
    peak : int
        Highest RSS in bytes during the block.
    delta : int
        ``peak - before``.
    exact : bool
        Whether the kernel's peak mark could be reset; if not, ``peak`` is the
        process's lifetime peak and ``delta`` an upper bound.
    trimmed : bool
        Whether the heap's free pages were returned first (glibc); if not,
        allocations served from them do not show.
    """

    def __enter__(self):
        # Free what earlier code left for the garbage collector, so that it
        # is neither counted in ``before`` nor collected during the block,
        # and return freed heap pages, so that reusing them counts.
        gc.collect()
        self.trimmed = _release_free_heap()
        self.exact = _reset_peak()
        self.before = rss_bytes()
        return self

    def __exit__(self, *exc):
        self.peak = max(_peak_bytes(), self.before)
        self.delta = self.peak - self.before
        return False

    def as_dict(self):
        return {"before": self.before, "peak": self.peak, "delta": self.delta,
                "exact": self.exact, "trimmed": self.trimmed}


class ForkServer:
    """Run functions of benchmark scripts, each call in a fresh forked process.

    Parameters
    ----------
    preload : sequence of str, default=()
        Modules the server imports before any fork: what every child would
        otherwise import again (a script's own imports need not be listed).
        Importing must not run torch or BLAS computations: their thread
        pools do not survive a fork.

    Examples
    --------
    ::

        with ForkServer(preload=["torch._dynamo"]) as server:
            peak = server.call(__file__, "measure_fit", runner="hand", n=1000)

    ``call`` imports ``script`` in the server (once; its ``if __name__ ==
    "__main__"`` block does not run), forks, runs ``function(**kwargs)`` in
    the child and returns its result, which must be JSON-able; an exception
    in the child raises ``RuntimeError`` here with the child's traceback.
    """

    def __init__(self, preload=()):
        self.preload = list(preload)
        self._proc = None

    def __enter__(self):
        # The server must import what this process imports: hand it our
        # sys.path, as multiprocessing's spawn does.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), _SERVER_FLAG, *self.preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        return self

    def call(self, script, function, **kwargs):
        request = {"script": os.path.abspath(script), "function": function,
                   "kwargs": kwargs}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(
                f"{os.path.basename(script)}: {function}({kwargs}) failed in its "
                f"child:\n{reply['error']}"
            )
        return reply["result"]

    def __exit__(self, *exc):
        self._proc.stdin.close()  # the server ends at EOF
        self._proc.wait()
        self._proc.stdout.close()
        return False


def _load(path, scripts):
    """The module of the script at ``path``, imported once per server."""
    if path not in scripts:
        name = f"_forked_{len(scripts)}_{os.path.splitext(os.path.basename(path))[0]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        scripts[path] = module
    return scripts[path]


def _child(module, request, write_end):
    """Run the request in the forked child and send back the reply; never returns."""
    os.dup2(2, 1)  # stray prints of the measured code go to stderr
    try:
        result = getattr(module, request["function"])(**request["kwargs"])
        reply = {"result": result}
    except BaseException:  # noqa: BLE001 - reported to the caller
        reply = {"error": traceback.format_exc()}
    sys.stdout.flush()
    with os.fdopen(write_end, "w") as f:
        f.write(json.dumps(reply))
    os._exit(0)


def _serve(preload):
    """The server loop: one JSON request per stdin line, one reply per stdout line."""
    for name in preload:
        importlib.import_module(name)
    scripts = {}
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        try:
            module = _load(request["script"], scripts)
        except BaseException:  # noqa: BLE001 - reported to the caller
            out.write(json.dumps({"error": traceback.format_exc()}) + "\n")
            out.flush()
            continue
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(module, request, write_end)
        os.close(write_end)
        with os.fdopen(read_end) as f:
            reply = f.read()
        _, status = os.waitpid(pid, 0)
        if not reply:
            reply = json.dumps({"error": f"the child ended with wait status {status} "
                                         "and no reply (killed for memory?)"})
        out.write(reply + "\n")  # json.dumps escapes newlines: one line
        out.flush()


if __name__ == "__main__" and len(sys.argv) >= 2 and sys.argv[1] == _SERVER_FLAG:
    _serve(sys.argv[2:])
