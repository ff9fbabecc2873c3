"""`edgestage calibrate SCENARIO --json`: the documented fields, inside the targets."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.root

FIELDS = {"link", "direction", "bw_mbit", "bw_measured_mbit", "rtt_ms", "rtt_measured_ms",
          "loss_pct", "loss_measured_pct", "backend"}


def test_calibrate_json(tmp_path, nothing_left_after: set) -> None:
    scenario = tmp_path / "one.toml"
    scenario.write_text(textwrap.dedent("""
        [topology]
        kind = "star"
        [[topology.devices]]
        name = "cal1"
        bw_mbit = 8
        delay_ms = 15
        loss_pct = 1
    """))
    nothing_left_after.add("cal1")
    cmd = [sys.executable, "-m", "emulation.cli", "calibrate", str(scenario), "--json",
           "--duration", "1.5"]
    for _attempt in range(2):  # a busy machine gets one re-measurement
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        rows = json.loads(res.stdout)
        if all(r[k] is not False for r in rows for k in ("ok_bw", "ok_rtt", "ok_loss")):
            break
    assert [r["direction"] for r in rows] == ["cal1->edge", "edge->cal1"]
    for r in rows:
        assert r.keys() >= FIELDS
        assert r["bw_mbit"] == 8 and r["rtt_ms"] == 30 and r["loss_pct"] == 1
        assert r["ok_bw"] and r["ok_rtt"] and r["ok_loss"], r
