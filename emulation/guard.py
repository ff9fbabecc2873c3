"""The run's guard: signals that end a run by unwinding it, and one emulated network per machine.

The one place this process's stop signals are handled, shared by the `edgestage` command line
(`install_handlers()`, first thing on import) and `EmulatedNetwork` (a `RunGuard` it holds):

- SIGINT (Ctrl-C) raises `KeyboardInterrupt`, SIGTERM and SIGHUP raise `Terminated` (a
  `SystemExit` with status 128 + the signal), so `with` blocks and `finally` clauses clean up on
  the way out; never inside an import (one cut short leaves torch or numpy half-initialised, and
  what surfaces is a RecursionError or ImportError with a traceback): there the signal is sent
  again 50 ms later, until the import is done.
- `held()`: the stop signals wait while something must not be cut short (a teardown), and are
  delivered once it is done, to whatever handles them then.
- `end_processes()`: what this process started, ended by pid (SIGTERM, then SIGKILL).
- `hold_machine_lock()`: two emulated networks on one machine collide (interface names,
  cgroups, Mininet's shells), so one waits for the other; the kernel lets go of the lock when its
  holder ends, however it ends.

Node processes (nodes/runtime) run in processes of their own and keep their own small handlers.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MACHINE_LOCK = Path("/run/lock/edgestage-network.lock")
_RETRY_S = 0.05


class Terminated(SystemExit):
    """SIGTERM or SIGHUP arrived: unwind as Ctrl-C does (exit status 128 + the signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _in_import(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def on_stop_signal(signum: int, frame: FrameType | None) -> None:
    """The handler of every stop signal: KeyboardInterrupt for SIGINT, Terminated for the others,
    outside imports (inside one the signal comes again 50 ms later)."""
    if _in_import(frame):
        threading.Timer(_RETRY_S, os.kill, (os.getpid(), signum)).start()
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install_handlers(signals: tuple[int, ...] = STOP_SIGNALS) -> dict[int, object]:
    """Handle the stop signals with `on_stop_signal` where they still have Python's defaults
    (not where they are ignored: a job started in the background ignores SIGINT, and so must
    we).  Returns the handlers replaced, for `restore_handlers`; main thread only (elsewhere
    nothing is changed)."""
    if not _main_thread():
        return {}
    replaced = {}
    for sig in signals:
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler, None):
            replaced[sig] = signal.signal(sig, on_stop_signal)
    return replaced


def restore_handlers(previous: dict[int, object]) -> None:
    if _main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def held(signals: tuple[int, ...] = STOP_SIGNALS,
         restore: dict[int, object] | None = None) -> Iterator[None]:
    """The signals wait while the block runs; then their handlers are put back (those of
    `restore` instead, for the signals it names) and each signal that came is delivered, once,
    to them.

    Swapping the handlers, not blocking the signals: the kernel gives a signal blocked in the
    main thread to another thread (torch's, ZeroMQ's), and Python runs the handler all the same.
    Outside the main thread there is no handler to hold off, and nothing is changed."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in signals}
    try:
        yield
    finally:
        for sig, handler in {**previous, **(restore or {})}.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


def hold_machine_lock() -> int:
    """One emulated network per machine.  Waits, saying so once, while another process of ours
    holds the lock.  Returns the locked descriptor (closing it lets go)."""
    MACHINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        log.warning("another edgestage network is up (pid %s): waiting for it to come down", holder)
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def end_processes(procs: list[subprocess.Popen], grace_s: float = 3.0) -> None:
    """End processes this one started, by pid: SIGTERM to each (to its process group where it
    leads one of its own, as `mnexec -d` makes it), all at once; SIGKILL for any still running
    after `grace_s`; their pipes closed."""
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid and pid != os.getpgid(0):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


class RunGuard:
    """What one network holds while it is up: the machine lock, the stop signals turned into
    unwinding (where nobody handles them yet), and an `atexit` last resort that tears it down.

        guard.enter(net.stop)          # before anything of the network exists
        with guard.leaving():          # the teardown: signals held, then lock and handlers let go
            ...
    """

    def __init__(self) -> None:
        self._lock_fd: int | None = None
        self._previous: dict[int, object] = {}
        self._on_exit: Callable[[], None] | None = None

    @property
    def locked(self) -> bool:
        """Whether this guard holds the machine lock (the network may have made something)."""
        return self._lock_fd is not None

    def enter(self, on_exit: Callable[[], None]) -> None:
        """Handlers first (a SIGTERM while waiting for the lock unwinds too), then `on_exit` at
        interpreter exit, then the lock (waiting while another network is up)."""
        self._previous = install_handlers((signal.SIGTERM, signal.SIGHUP))
        self._on_exit = on_exit
        atexit.register(on_exit)
        self._lock_fd = hold_machine_lock()

    @contextlib.contextmanager
    def leaving(self) -> Iterator[None]:
        """The stop signals held while the block runs; after it the lock is let go and the
        handlers are the ones found at `enter()`; a signal that came meanwhile goes to them."""
        previous, self._previous = self._previous, {}
        with held(restore=previous):
            try:
                yield
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # the next network may come up
                    self._lock_fd = None
                if self._on_exit is not None:
                    atexit.unregister(self._on_exit)
                    self._on_exit = None


__all__ = ["MACHINE_LOCK", "STOP_SIGNALS", "RunGuard", "Terminated", "end_processes", "held",
           "hold_machine_lock", "install_handlers", "on_stop_signal", "restore_handlers"]
