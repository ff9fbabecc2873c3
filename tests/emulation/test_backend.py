"""Backend choice and the tc commands each backend installs."""

from __future__ import annotations

import subprocess

import pytest

from emulation.impairment import choose_backend, kernel_has_netem
from emulation.shaping import netem_change_command, setup_commands
from topologies.spec import LinkShape


def test_unknown_backend_is_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        choose_backend("fast")
    assert choose_backend("userspace") == "userspace"


@pytest.mark.root
def test_netem_probe_is_correct_and_leaves_nothing() -> None:
    has = kernel_has_netem.__wrapped__()  # probe afresh, not the cached answer
    assert isinstance(has, bool)
    assert choose_backend("auto") == ("netem" if has else "userspace")
    if not has:
        with pytest.raises(ValueError, match="no sch_netem"):
            choose_backend("netem")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "es-netem-probe" not in netns


def test_shaping_commands_follow_mininet_layout() -> None:
    d = LinkShape(bw_mbit=10, delay_ms=20, jitter_ms=2, loss_pct=1.5, queue_pkts=100)
    user = setup_commands("d1-eth0", d, "userspace")
    assert user == [
        "tc qdisc add dev d1-eth0 root handle 5:0 htb default 1",
        "tc class add dev d1-eth0 parent 5:0 classid 5:1 htb rate 10mbit burst 15k",
        "tc qdisc add dev d1-eth0 parent 5:1 handle 10: pfifo limit 100",
    ]
    netem = setup_commands("d1-eth0", d, "netem")
    assert netem[-1] == ("tc qdisc add dev d1-eth0 parent 5:1 handle 10: netem delay 20ms "
                         "2ms distribution normal loss 1.5% limit 100")
    assert setup_commands("x-eth0", LinkShape(), "userspace") == []
    change = netem_change_command("x-eth0", LinkShape(bw_mbit=5, delay_ms=3), True)
    assert change[-3:] == ["netem", "delay", "3ms"]
