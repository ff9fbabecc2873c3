"""One emulated network per machine: a second waits until the first process lets go (root)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from emulation.guard import MACHINE_LOCK, hold_machine_lock

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def test_a_second_network_waits_for_the_first_process_to_end() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "from emulation.guard import hold_machine_lock; hold_machine_lock(); "
         "print('held', flush=True); import time; time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(hold_machine_lock()), daemon=True)
        waiter.start()
        waiter.join(timeout=1.0)
        assert not got  # still held by the other process
        holder.kill()  # the kernel lets go of a dead process's lock, however it died
        holder.wait()
        waiter.join(timeout=10)
        assert got
        os.close(got[0])
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_the_lock_names_its_holder() -> None:
    fd = hold_machine_lock()
    try:
        assert MACHINE_LOCK.read_text() == str(os.getpid())
    finally:
        os.close(fd)
