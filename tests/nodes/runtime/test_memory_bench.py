"""`edgestage bench memory` on a real loopback cluster: forking nodes from the launcher takes far
less of the machine's memory than starting them one by one, and every request is still served."""

import subprocess
import sys

from nodes.runtime.local_cluster import ROOT
from nodes.runtime.memory_bench import bench_memory


def test_shared_nodes_take_a_fraction_of_the_memory_of_separate_ones():
    shared, separate = bench_memory(devices=1)
    assert shared["mode"] == "shared" and separate["mode"] == "separate"
    assert shared["node_processes"] == separate["node_processes"] == 3
    assert shared["requests_failed"] == separate["requests_failed"] == 0
    # the imports (~300 MB) are held once rather than once per node
    assert shared["total_pss_mb"] < 0.6 * separate["total_pss_mb"], (shared, separate)
    assert shared["node_uss_max_mb"] < separate["node_uss_median_mb"] / 3, (shared, separate)
    assert shared["launcher_pss_mb"] > 0 and separate["launcher_pss_mb"] is None


def test_bad_device_count_is_one_line_exit_2():
    done = subprocess.run([sys.executable, "-m", "emulation.cli", "bench", "memory", "--devices", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("edgestage: error:") and "--devices" in done.stderr
