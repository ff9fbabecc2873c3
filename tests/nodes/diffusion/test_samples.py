"""A samples file is written whole or not at all, and Ctrl-C cannot come between making a
temporary file and knowing its name (which left a probe file behind once, in CI)."""

import os
import signal
import threading
import time

import pytest

from nodes.diffusion.samples import check_output_path, ctrl_c_held


def test_ctrl_c_inside_a_held_block_comes_when_it_ends(tmp_path):
    handler = signal.getsignal(signal.SIGINT)  # Python's, or the CLI's once emulation.cli is imported
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after the signal")  # not interrupted here
        reached.append("after the block")  # interrupted before this
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is back


def test_ctrl_c_is_held_off_even_when_another_thread_takes_the_signal():
    # torch's and ZeroMQ's threads do not block SIGINT, so the kernel may hand it to them
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt), ctrl_c_held():
            signal.pthread_kill(other.ident, signal.SIGINT)
            time.sleep(0.05)
            reached.append("after the signal")
    finally:
        stop.set()
        other.join()
    assert reached == ["after the signal"]


def test_checking_an_output_path_leaves_nothing(tmp_path):
    assert check_output_path(tmp_path / "new" / "s.npz") == tmp_path / "new" / "s.npz"
    assert list(tmp_path.iterdir()) == []  # not even the folder it would make
    with pytest.raises(ValueError, match="it is a directory"):
        check_output_path(tmp_path)
