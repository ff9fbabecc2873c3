"""The run's guard (emulation/guard.py): stop signals that unwind, held off during a teardown and
delivered after it, one handling shared by the CLI and the network, processes ended by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emulation import guard

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sigterm_recorded():
    """SIGTERM handled by a recorder for the test (the previous handler back after it)."""
    got: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: got.append(signum))
    yield got
    signal.signal(signal.SIGTERM, previous)


def test_held_signals_wait_for_the_block_and_come_once(sigterm_recorded: list[int]) -> None:
    with guard.held():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert sigterm_recorded == []  # not yet
    assert sigterm_recorded == [signal.SIGTERM]  # after the block, once


def test_held_hands_the_signal_to_the_restored_handler(sigterm_recorded: list[int]) -> None:
    later: list[int] = []
    with guard.held(restore={signal.SIGTERM: lambda signum, _frame: later.append(signum)}):
        os.kill(os.getpid(), signal.SIGTERM)
    assert later == [signal.SIGTERM] and sigterm_recorded == []


def test_stop_signals_unwind() -> None:
    with pytest.raises(guard.Terminated) as info:
        guard.on_stop_signal(signal.SIGTERM, None)
    assert info.value.code == 128 + signal.SIGTERM and isinstance(info.value, SystemExit)
    with pytest.raises(KeyboardInterrupt):
        guard.on_stop_signal(signal.SIGINT, None)


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # e.g. started under nohup
    try:
        assert guard.install_handlers((signal.SIGHUP,)) == {}
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


CLI_CHILD = textwrap.dedent("""
    import argparse, sys, time
    import emulation.cli as cli

    class Parser:
        def parse_args(self, argv):
            def wait(_args):
                try:
                    print("waiting", flush=True)
                    time.sleep(60)
                finally:
                    print("cleaned up", flush=True)
            return argparse.Namespace(func=wait)

    cli.build_parser = Parser
    sys.exit(cli.main([]))
""")


@pytest.mark.parametrize(("sig", "code", "line"), [
    (signal.SIGTERM, 128 + signal.SIGTERM, "edgestage: terminated (SIGTERM)"),
    (signal.SIGINT, 130, "edgestage: interrupted"),
])
def test_the_cli_unwinds_on_a_stop_signal(sig: int, code: int, line: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CLI_CHILD], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert child.stdout.readline().strip() == "waiting", child.stderr.read()
        child.send_signal(sig)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == code
    assert out.strip() == "cleaned up"  # the finally clause ran
    assert err.strip() == line  # one line, no traceback


def test_end_processes_terminates_then_kills() -> None:
    polite = subprocess.Popen(["sleep", "100"], start_new_session=True)
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                 "print('ready', flush=True); time.sleep(100)"],
                                stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    began = time.monotonic()
    guard.end_processes([polite, stubborn], grace_s=0.5)
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert time.monotonic() - began < 5


@pytest.mark.root
def test_the_run_guard_holds_the_lock_and_gives_everything_back() -> None:
    exits: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    g = guard.RunGuard()
    g.enter(lambda: exits.append("atexit"))
    try:
        assert g.locked
        assert guard.MACHINE_LOCK.read_text() == str(os.getpid())
        if before in (signal.SIG_DFL, None):
            assert signal.getsignal(signal.SIGTERM) is guard.on_stop_signal
    finally:
        with g.leaving():
            pass
    assert not g.locked
    assert signal.getsignal(signal.SIGTERM) is before
    fd = guard.hold_machine_lock()  # free again: does not wait
    os.close(fd)
