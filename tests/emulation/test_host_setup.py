"""Host set-up's commands do not grow with the number of hosts (no root: Mininet's hosts are
stand-ins that record what they are asked to run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from emulation.host_config import HostSetup
from emulation.impairment import MAX_PROCESSES
from emulation.live_links import LiveLinks
from topologies.spec import parse_topology
from topologies.topos import topology_from_spec

DEVICES = 1024
ARG_MAX_ONE = 128 * 1024  # the kernel's limit on one argument (MAX_ARG_STRLEN)


class _Done:
    returncode = 0

    def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        return b"", b""


class _Host:
    def __init__(self, name: str, pid: int, ran: dict) -> None:
        self.name, self.pid, self._ran = name, pid, ran

    def popen(self, argv: list[str], **_kwargs: object) -> _Done:
        # the script and the batch files it names exist while it runs: read them now
        script = Path(argv[-1]).read_text()
        files = {line.split()[-1]: Path(line.split()[-1]).read_text()
                 for line in script.splitlines() if "-batch" in line}
        self._ran[self.name] = (argv, script, files)
        return _Done()


def _star(backend: str = "netem") -> tuple[HostSetup, dict]:
    spec = parse_topology({"kind": "star", "num_devices": DEVICES,
                           "device_link": {"bw_mbit": 20, "delay_ms": 10}})
    topo = topology_from_spec(spec)
    ran: dict = {}
    hosts = {name: _Host(name, 10_000 + n, ran) for n, name in enumerate(topo.hosts())}
    setup = HostSetup(spec, topo, list(topo.link_infos), backend, cpu_limits=False)
    setup.adopt(hosts)
    return setup, ran


def test_a_1024_device_hub_is_configured_with_commands_of_constant_size() -> None:
    setup, ran = _star()
    setup.configure()
    assert set(ran) == set(setup.hosts)
    sizes = {h: sum(len(a) for a in argv) for h, (argv, _, _) in ran.items()}
    assert max(sizes.values()) < 200  # a script's path, whatever the host's links
    hub_argv, hub_script, hub_files = ran["edge"]
    assert sum(len(text) for text in hub_files.values()) > ARG_MAX_ONE  # once one argument
    ip_batch = next(text for path, text in hub_files.items() if path.endswith(".ip"))
    tc_batch = next(text for path, text in hub_files.items() if path.endswith(".tc"))
    assert ip_batch.count("address add") == DEVICES  # one per device link
    assert tc_batch.count("qdisc add") >= DEVICES
    assert "ip_forward=1" in hub_script
    # the files are gone with the set-up
    assert not any(Path(p).exists() for _, _, files in ran.values() for p in files)


FAKE_NFQ = """
import json, os, sys
confs = json.load(open(sys.argv[-1][1:]))
with open(os.path.join(os.environ["FAKE_NFQ_OUT"], str(os.getpid())), "w") as f:
    json.dump(sorted({c["netns"] for c in confs}), f)
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_few_impairment_processes_serve_a_big_network(monkeypatch, tmp_path: Path) -> None:
    setup, _ = _star(backend="userspace")
    monkeypatch.setenv("FAKE_NFQ_OUT", str(tmp_path))
    monkeypatch.setattr("emulation.impairment._python", lambda: [sys.executable, "-c", FAKE_NFQ])
    monkeypatch.setattr("emulation.impairment._iptables_restore_all", lambda work: None)
    setup.configure()
    procs = setup.impair._procs()
    assert 1 < len(procs) <= MAX_PROCESSES  # not one per host: 1,025 took half a minute
    assert max(len(" ".join(p.args)) for p in procs) < 1000  # a file name, whatever the links
    setup.impair.stop(delete_rules=False)
    assert all(p.returncode == 0 for p in procs)
    entered = [ns for f in tmp_path.iterdir() for ns in json.loads(f.read_text())]
    # every impaired host's namespace (each device's, and the hub's) is entered by one process
    assert sorted(entered) == sorted(f"/proc/{pid}/ns/net" for pid in setup.shell_pids.values())


def test_live_links_start_from_the_configured_shapes() -> None:
    setup, _ = _star()
    live = LiveLinks(setup.topo, setup.links, "netem", 1.0, setup.impair, setup.shell_pids.get)
    li = live.link("d1", "edge")
    assert live.state("d1", li.intf_a).delay_ms == 10
    assert live.state("edge", li.intf_b).bw_mbit == 20
