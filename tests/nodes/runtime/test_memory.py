"""nodes/runtime/memory.py on real processes: this one, a child that shares its pages, and one that
is gone."""

import os
import subprocess
import sys
import time

from nodes.runtime.memory import nodes_memory, process_memory


def test_the_three_measures_are_ordered_for_this_process():
    memory = process_memory(os.getpid())
    assert 0 < memory["uss"] <= memory["pss"] <= memory["rss"]


def test_a_snapshot_skips_processes_that_are_gone_and_totals_the_rest():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pid = os.fork()
    if pid == 0:  # a child that shares this process's pages until it is killed
        time.sleep(30)
        os._exit(0)
    try:
        snapshot = nodes_memory({"me": os.getpid(), "child": pid, "gone": gone.pid}, launcher_pid=None)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert set(snapshot["nodes"]) == {"me", "child"} and snapshot["launcher"] is None
    me, child = snapshot["nodes"]["me"], snapshot["nodes"]["child"]
    assert child["uss_mb"] < child["rss_mb"] / 2  # forked: most of its pages are this process's
    assert snapshot["total_pss_mb"] == round(me["pss_mb"] + child["pss_mb"], 1)
    assert snapshot["node_rss_max_mb"] == max(me["rss_mb"], child["rss_mb"])
    assert nodes_memory({"gone": gone.pid}) == {"nodes": {}, "launcher": None}
