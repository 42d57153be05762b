"""One clear line per expected error, for every entry point of the bundle.

``python -m monai.bundle run ...`` wraps an error raised while a config expression runs in MONAI's
``RuntimeError("Failed to evaluate ...")`` (and Ignite/handlers add their own layers), so the message
that says what is wrong ends up under 100-300 lines of traceback. :func:`install` (called when the
``scripts`` package is imported, which every config does) replaces ``sys.excepthook`` with
:func:`report`, which walks the exception chain (``__cause__`` / ``__context__``) to the root cause and:

* for an **expected** error (:func:`is_expected`: a missing file, a bad flag or input rejected by the
  bundle's own checks, a corrupt checkpoint, a preset mismatch) prints ``error: <message>`` and where
  the full traceback was written (:func:`log_path`), then exits with status 1;
* a **clean stop** raises :class:`Interrupted` (a ``SystemExit(130)``) after printing its one line, so
  neither Ignite, MONAI nor this hook adds anything. :func:`listen` (called by :func:`install`) makes SIGINT and
  SIGTERM raise ``KeyboardInterrupt`` in the main thread wherever the run is, and records the request so that long
  loops can act on it (:func:`check_stop`) even where a library swallowed the ``KeyboardInterrupt``;
* for anything else (a bug) prints the usual traceback.

Set ``PERX2CT_DEBUG=1`` to always get the full traceback on the console.
"""

from __future__ import annotations

import _thread
import atexit
import gc
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import TracebackType

__all__ = [
    "CTLoadError",
    "Interrupted",
    "stop",
    "listen",
    "stop_requested",
    "check_stop",
    "acknowledge",
    "install",
    "report",
    "chain",
    "root_cause",
    "is_expected",
    "one_line",
    "log_path",
    "DEBUG_ENV",
]

#: Environment variable that turns the one-line reports back into full tracebacks.
DEBUG_ENV = "PERX2CT_DEBUG"
#: Environment variable naming the file that receives the full traceback (default: :func:`log_path`).
LOG_ENV = "PERX2CT_ERROR_LOG"

_OWN_PACKAGES = ("scripts", "bundle")
# standard exceptions the bundle's own checks raise with a complete message
_EXPECTED_BUILTINS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
_OWN_RAISES = (ValueError, KeyError, TypeError, RuntimeError, OSError, EOFError)


class CTLoadError(ValueError):
    """A CT could not be found or loaded; the message names the path, the problem and the fix.

    Every problem with a CT given to the bundle (a missing path, no DICOM, a series that cannot be placed in 3D,
    truncated files, NaN values, a CT that cannot be a chest CT) raises it, whichever module of :mod:`scripts.ct`
    finds it. Prepare records it as the reason a case failed (without a traceback: it is the input's fault).
    """


class Interrupted(SystemExit):
    """A clean stop (Ctrl-C / SIGTERM) after the point reached was saved: exit status 130.

    A ``SystemExit`` so that nothing on the way up (Ignite, MONAI's config evaluation) wraps it or
    prints a traceback. The raiser prints the one line first (:func:`stop`).
    """

    def __init__(self, message: str) -> None:
        super().__init__(130)
        self.message = message


def stop(message: str) -> Interrupted:
    """Print ``message`` (one line, stderr) and return the :class:`Interrupted` to raise.

    The pending stop request (:func:`stop_requested`) is then answered: it is cleared, and the process's exit skips
    the interpreter's final garbage collection (:func:`_quick_exit`), which takes 2-5 s with torch and MONAI
    loaded and would push the exit past the 2 s a stop is given.
    """
    global _stopping, _requested
    acknowledge()  # printing can block on a full pipe: no re-raise meanwhile
    print(message, file=sys.stderr, flush=True)
    _stopping, _requested = True, None
    return Interrupted(message)


# ----------------------------------------------------------------------------------------- stop requests
#: The signals that stop a run cleanly: Ctrl-C, and what ``kill``, job schedulers and container runtimes send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: int | None = None  # the signal of a stop request not yet answered by stop()
_acknowledged = False  # a handler has taken the pending request (acknowledge()): the watchdog leaves it alone
_watching = False  # the watchdog thread of the pending request runs
_stopping = False  # stop() was called: the process is on its way out
_exit_hook = False
#: Seconds after a stop request without a handler taking it (:func:`acknowledge`) before the watchdog raises
#: ``KeyboardInterrupt`` in the main thread again, and between repeats. A library that swallows the first one
#: (ITK's lazy loading of its compiled modules does, and then loads for seconds) is interrupted again; the clean
#: stop's 2 s budget holds. Handlers that save (:class:`scripts.handlers.CleanStop`) acknowledge first, so a
#: save is never interrupted by the watchdog.
REPEAT_S = 0.6


def _on_signal(signum: int, frame: object) -> None:
    """The handler of :data:`STOP_SIGNALS`: record the request, then interrupt whatever the main thread runs."""
    global _requested, _acknowledged
    if _requested is None:
        _requested, _acknowledged = signum, False
    _watch()
    raise KeyboardInterrupt  # no message: Ignite's "terminating due to exception: " line is then recognised


def acknowledge() -> None:
    """A handler has taken the pending stop request (it saves and then calls :func:`stop`): no more re-raises.

    Catch sites that act on a stop call it first, before anything slow. A ``KeyboardInterrupt`` that no handler
    acknowledges within :data:`REPEAT_S` was swallowed on the way, and is raised again.
    """
    global _acknowledged
    _acknowledged = True


def _watch() -> None:
    """Start the watchdog of the pending request (one thread per request; a daemon, so it never holds an exit)."""
    global _watching
    if _watching:
        return
    _watching = True
    threading.Thread(target=_watchdog, name="perx2ct-stop-watchdog", daemon=True).start()


def _watchdog() -> None:
    global _watching
    try:
        while True:
            time.sleep(REPEAT_S)
            if _requested is None or _acknowledged or _stopping:
                return
            if signal.getsignal(signal.SIGINT) is not _on_signal:
                return  # another tool's handler now: not ours to call
            _thread.interrupt_main(signal.SIGINT)  # runs _on_signal in the main thread: KeyboardInterrupt again
    finally:
        _watching = False


def _quick_exit() -> None:
    # atexit, after a clean stop: objects alive now are left to the OS instead of the final collection (files are
    # closed and atexit handlers such as logging's flush still run; measured: 2-5 s -> 0.4 s with torch + MONAI)
    if _stopping:
        gc.freeze()


def listen() -> None:
    """From now on SIGINT and SIGTERM stop the run cleanly wherever it is (main thread only; elsewhere a no-op).

    Each raises ``KeyboardInterrupt`` in the main thread (which :class:`scripts.handlers.CleanStop`, the slice cache
    and prepare turn into their one line and exit status 130) and records the request for :func:`check_stop`.
    SIGINT is taken over even when inherited as ignored: a run started in the background from a script (``cmd &``
    without job control) ignores SIGINT from birth, and ``kill -INT`` would otherwise never stop it. A handler that
    another tool installed (not the default, not "ignore") is left alone. Python runs the handler between bytecodes:
    a single library call that holds the GIL (e.g. one ITK ray cast) delays it until that call returns. A
    ``KeyboardInterrupt`` swallowed on the way is raised again by a watchdog thread (:data:`REPEAT_S`) until a
    handler acknowledges it (:func:`acknowledge`).
    """
    global _exit_hook
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None):
            signal.signal(sig, _on_signal)
    if not _exit_hook:
        atexit.register(_quick_exit)
        _exit_hook = True


def stop_requested() -> bool:
    """A stop signal arrived and no clean stop has answered it yet."""
    return _requested is not None


def check_stop() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested and not yet answered.

    Long loops call it between units of work (cases, slices, chunks), so a request whose ``KeyboardInterrupt``
    was swallowed on the way (inside a ``__del__`` or a callback, or by a library's ``except BaseException``) is
    still acted on within one unit.
    """
    if _requested is not None:
        raise KeyboardInterrupt


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it, outermost first (``__cause__``, else ``__context__``)."""
    out: list[BaseException] = []
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return out


def root_cause(exc: BaseException) -> BaseException:
    """The exception that says what went wrong: the outermost one raised by the bundle's own code or
    classes (its message was written for the user), else the innermost expected one, else the innermost."""
    links = chain(exc)
    for e in links:
        if _own(e):
            return e
    for e in reversed(links):
        if is_expected(e):
            return e
    return links[-1]


def _raised_in_own_code(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    module = str(last.tb_frame.f_globals.get("__name__", ""))
    return module.split(".")[0] in _OWN_PACKAGES


def _state_dict_mismatch(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and str(exc).startswith("Error(s) in loading state_dict")


def _own(exc: BaseException) -> bool:
    """An error of the bundle's own classes, or a standard one raised by the bundle's own checks."""
    if type(exc).__module__.split(".")[0] in _OWN_PACKAGES:
        return True
    return isinstance(exc, _OWN_RAISES) and _raised_in_own_code(exc)


def is_expected(exc: BaseException) -> bool:
    """True for errors a user can fix from the message alone (see module doc); False for bugs."""
    return isinstance(exc, _EXPECTED_BUILTINS) or _state_dict_mismatch(exc) or _own(exc)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line (a state-dict mismatch is summarised, not listed)."""
    if _state_dict_mismatch(exc):
        text = str(exc)
        n_size = text.count("size mismatch")
        n_missing = text.count('"') // 2 if "Missing key(s)" in text or "Unexpected key(s)" in text else 0
        return (
            f"the checkpoint does not fit the network ({n_size} size mismatches, {n_missing} missing/unexpected keys): "
            "it was saved for another model_preset; pass the preset it was trained with (--model_preset NAME) "
            "or use a checkpoint whose models/<name>.json sidecar names its preset"
        )
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(msg.split()) or repr(exc)
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in msg:
        msg = f"{msg}: {exc.filename}"
    return msg


def log_path() -> Path:
    """Where the full traceback of the last reported error goes: ``$PERX2CT_ERROR_LOG``, else
    ``runs/last_error.log`` under the working directory (the bundle root) when writable, else the
    temporary directory."""
    if os.environ.get(LOG_ENV):
        return Path(os.environ[LOG_ENV])
    runs = Path.cwd() / "runs"
    if os.access(runs if runs.is_dir() else Path.cwd(), os.W_OK):
        return runs / "last_error.log"
    return Path(tempfile.gettempdir()) / "perx2ct_last_error.log"


def _write_log(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> str | None:
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(kind, exc, tb)))
        return str(path)
    except OSError:
        return None


def report(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook``: one line for an expected error, the usual traceback otherwise."""
    debug = os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")
    if isinstance(exc, KeyboardInterrupt) and not debug:
        acknowledge()
        print("interrupted (before anything resumable was saved)", file=sys.stderr, flush=True)
        return  # Python then ends the process by SIGINT: exit status 130 in the shell
    cause = root_cause(exc)
    if debug or not is_expected(cause):
        sys.__excepthook__(kind, exc, tb)
        return
    where = _write_log(kind, exc, tb)
    hint = f" (full traceback: {where}; {DEBUG_ENV}=1 prints it)" if where else f" ({DEBUG_ENV}=1 prints the traceback)"
    print(f"error: {one_line(cause)}{hint}", file=sys.stderr, flush=True)
    # the exit status of an uncaught exception is 1 whatever the hook prints


def install() -> None:
    """Make :func:`report` the process's excepthook, unless another tool (IPython, pytest) set its own, and
    :func:`listen` for stop signals."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = report
    listen()
