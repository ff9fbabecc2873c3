"""The node launcher: one process that imports torch and diffusers once, then forks every node.

A node process is mostly its imports: torch, diffusers and the rest hold about 340 MB before a
model is loaded, against 2-16 MB for the models themselves.  Started one by one, every node pays
that again.  The launcher imports it all once, freezes the garbage collector's view of those
objects (so that collections do not write to, and un-share, their pages) and forks a child per
node; the children share the imported pages copy-on-write and own only what they change.  Each
child enters its Mininet host's network namespace (setns) before it runs `nodes.runtime.node.main`, so
it is the same node process, on the same address, as `python -m nodes.runtime.node` started in the host.

Node processes also do without scipy, which diffusers imports eagerly when it is installed (for
optional sigma schedules) but which no stage uses: diffusers treats it as absent, as on an
install without it, which saves about 55 MB in the launcher and in every child.

The launcher is driven over its stdin and stdout, one JSON object per line:
    in:  {"op": "spawn", "host": NAME, "config": FILE, "log": FILE, "netns_pid": PID or null}
         {"op": "signal", "pid": PID, "signal": N}
    out: {"event": "ready", "pid": PID, "import_s": S}          once, after the imports
         {"event": "spawned", "host": NAME, "pid": PID}
         {"event": "error", "op": OP, "error": TEXT}             a command it could not carry out
         {"event": "exit", "pid": PID, "code": N}               negative: killed by signal -N
It signals only its own children (by pid, before it has reaped them, so the pid is theirs), and
on end of input, SIGTERM or SIGINT it stops every child (SIGTERM, then SIGKILL after a grace) and
exits.  Children get SIGTERM if the launcher dies; the launcher gets SIGTERM if its parent dies.

`NodeLauncher` is the other end, for the runner and the loopback cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nodes.runtime.memory import block_unused

ROOT = Path(__file__).resolve().parents[2]  # the repository
# everything a node imports, also lazily: after the fork nothing heavy is imported again
PRELOAD = ("nodes.runtime.node", "nodes.runtime.worker", "nodes.runtime.device", "nodes.runtime.coordinator",
           "nodes.runtime.records", "nodes.runtime.pacing", "nodes.diffusion.executor",
           "nodes.diffusion.model_zoo", "nodes.diffusion.schedulers", "nodes.diffusion.samples",
           "nodes.planning.strategies", "psutil", "zmq.auth.thread")
STOP_GRACE_S = 10.0
_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_PR_SET_NAME, _PR_SET_PDEATHSIG = 15, 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """This process gets `sig` when the thread that started it exits (Linux); as a `preexec_fn`,
    a killed test run or runner cannot leave the process it starts behind."""
    _libc().prctl(_PR_SET_PDEATHSIG, sig)


def enter_namespaces(pid: int) -> None:
    """Join the network namespace of process `pid` (a Mininet host's shell), and its mount
    namespace when it differs from ours, as `mnexec -a PID` does."""
    libc = _libc()
    for kind, flag in (("net", _CLONE_NEWNET), ("mnt", _CLONE_NEWNS)):
        target = f"/proc/{pid}/ns/{kind}"
        if kind == "mnt" and os.stat(target).st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino:
            continue
        fd = os.open(target, os.O_RDONLY)
        try:
            if libc.setns(fd, flag) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({target}): {os.strerror(err)}")
        finally:
            os.close(fd)


# ---- the launcher process ---------------------------------------------------------------------

class _Launcher:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir.resolve()
        self.children: set[int] = set()
        self.stopping = False

    def emit(self, **event: Any) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def serve(self) -> int:
        began = time.monotonic()
        block_unused()
        import importlib

        for module in PRELOAD:
            importlib.import_module(module)
        gc.collect()
        gc.freeze()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop_signal)
        self.emit(event="ready", pid=os.getpid(), import_s=round(time.monotonic() - began, 3))
        buffered = b""
        while not self.stopping:
            self.reap()
            try:
                readable, _, _ = select.select([sys.stdin.fileno()], [], [], 0.1)
            except InterruptedError:
                continue
            if not readable:
                continue
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if line.strip():
                    self.handle(line)
        self.stop_children()
        return 0

    def _on_stop_signal(self, *_: object) -> None:
        self.stopping = True

    def handle(self, line: bytes) -> None:
        """One command; a bad one gets an error event, never the launcher's death."""
        op = None
        try:
            command = json.loads(line)
            if not isinstance(command, dict):
                raise ValueError("a command must be a JSON object")
            op = command.get("op")
            if op == "spawn":
                self.spawn(command)
            elif op == "signal":
                self.signal(command)
            else:
                raise ValueError(f"unknown op {op!r}: expected spawn or signal")
        except (ValueError, TypeError, KeyError, OSError) as exc:
            self.emit(event="error", op=op, error=f"{type(exc).__name__}: {exc}"[:500])

    def spawn(self, command: dict[str, Any]) -> None:
        host, config, log_file = str(command["host"]), Path(command["config"]), Path(command["log"])
        netns_pid = command.get("netns_pid")
        for path in (config, log_file):
            if not path.resolve().is_relative_to(self.run_dir):
                raise ValueError(f"{path} is outside the run directory {self.run_dir}")
        if not config.is_file():
            raise ValueError(f"no config file {config}")
        live = isinstance(netns_pid, int) and os.path.exists(f"/proc/{netns_pid}")
        if netns_pid is not None and not live:
            raise ValueError(f"netns_pid {netns_pid!r} is not a live process")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(host, config, log_file, netns_pid)  # never returns
        self.children.add(pid)
        self.emit(event="spawned", host=host, pid=pid)

    def _child(self, host: str, config: Path, log_file: Path, netns_pid: int | None) -> None:
        code = 1
        try:
            parent = os.getppid()
            die_with_parent()
            if os.getppid() != parent:  # the launcher died before prctl took effect
                os._exit(1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            null_fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            os.close(null_fd)
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            _libc().prctl(_PR_SET_NAME, f"node-{host}"[:15].encode())
            if netns_pid is not None:
                enter_namespaces(netns_pid)
            from nodes.runtime.node import main

            code = main(["--config", str(config)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def signal(self, command: dict[str, Any]) -> None:
        pid, sig = int(command["pid"]), int(command["signal"])
        if pid not in self.children:
            raise ValueError(f"pid {pid} is not a running child of this launcher")
        os.kill(pid, signal.Signals(sig))

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.emit(event="exit", pid=pid, code=os.waitstatus_to_exitcode(status))

    def stop_children(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(Exception):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.children):
            with contextlib.suppress(Exception):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            self.reap()
            time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.runtime.launcher",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path,
                        help="the run it serves: node configs and logs must lie inside it")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"launcher: error: run directory {args.run_dir} does not exist", file=sys.stderr)
        return 2
    return _Launcher(args.run_dir).serve()


# ---- the client: the runner's and the loopback cluster's end ----------------------------------

class LaunchedNode:
    """A node forked by the launcher, with the parts of `subprocess.Popen` that the runner uses."""

    def __init__(self, launcher: NodeLauncher, host: str, pid: int) -> None:
        self.launcher = launcher
        self.host = host
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def _set_exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"node {self.host}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            self.launcher.signal(self, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class NodeLauncher:
    """Start the launcher for a run, fork nodes through it, stop it (and so every node) on exit."""

    def __init__(self, run_dir: Path, env: dict[str, str] | None = None,
                 start_timeout: float = 180.0) -> None:
        self.run_dir = Path(run_dir)
        self.env = env
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.nodes: dict[int, LaunchedNode] = {}
        self.import_s: float | None = None
        self._replies: list[dict[str, Any]] = []
        self._early_exits: dict[int, int] = {}
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._write_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / "launcher.log"

    def __enter__(self) -> NodeLauncher:
        self.launch()  # the imports run meanwhile; the first spawn waits for them
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        if self.process is not None:
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**(self.env if self.env is not None else os.environ), "PYTHONUNBUFFERED": "1"}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nodes.runtime.launcher", str(self.run_dir)], cwd=ROOT, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        self._reader = threading.Thread(target=self._read_events, name="launcher-events", daemon=True)
        self._reader.start()

    def wait_ready(self) -> None:
        """Until the launcher has imported everything (at most `start_timeout`)."""
        if self.import_s is not None:
            return
        try:
            ready = self._next_reply(self.start_timeout, "ready")
        except BaseException:
            self.close()
            raise
        self.import_s = float(ready.get("import_s", 0.0))

    def spawn(self, host: str, config_file: Path, log_file: Path, netns_pid: int | None = None,
              timeout: float = 30.0) -> LaunchedNode:
        """Fork a node for `host` from its config file; inside the namespace of `netns_pid`."""
        with self._write_lock:  # replies come in command order: one spawn at a time
            self.wait_ready()
            self._send({"op": "spawn", "host": host, "config": str(config_file), "log": str(log_file),
                        "netns_pid": netns_pid})
            reply = self._next_reply(timeout, "spawned")
            node = LaunchedNode(self, host, int(reply["pid"]))
            with self._cond:
                self.nodes[node.pid] = node
                if node.pid in self._early_exits:
                    node._set_exit(self._early_exits.pop(node.pid))
        return node

    def signal(self, node: LaunchedNode, sig: int) -> None:
        # a launcher that is gone has taken its children with it: nothing left to signal
        with contextlib.suppress(RuntimeError, OSError, ValueError):
            self._send({"op": "signal", "pid": node.pid, "signal": int(sig)})

    def close(self, timeout: float = STOP_GRACE_S + 10) -> int | None:
        """End of input: the launcher stops every node it forked, then exits."""
        if self.process is None:
            return None
        with contextlib.suppress(Exception):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the launcher and its nodes
            code = self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def _send(self, command: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        if self.process.poll() is not None:
            code = self.process.returncode
            raise RuntimeError(f"the node launcher has exited with {code}: {self.log_tail()}")
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()

    def _next_reply(self, timeout: float, wanted: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader is not None and not self._reader.is_alive()):
                    raise RuntimeError(f"the node launcher sent no {wanted!r} in {timeout:g} s: "
                                       f"{self.log_tail()}")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(0)
        if reply.get("event") != wanted:
            raise RuntimeError(f"node launcher: {reply.get('error', reply)}")
        return reply

    def _read_events(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._cond:
                if event.get("event") == "error" and event.get("op") == "signal":
                    pass  # the node exited meanwhile: its exit event says how
                elif event.get("event") == "exit":
                    node = self.nodes.get(event["pid"])
                    if node is not None:
                        node._set_exit(int(event["code"]))
                    else:  # exited before spawn() registered it
                        self._early_exits[event["pid"]] = int(event["code"])
                else:
                    self._replies.append(event)
                self._cond.notify_all()
        with self._cond:  # the launcher died without reporting them: they got its death signal
            for node in self.nodes.values():
                if node.returncode is None:
                    node._set_exit(-signal.SIGTERM)
            self._cond.notify_all()

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


if __name__ == "__main__":
    sys.exit(main())
