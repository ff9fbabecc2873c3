"""Deploy files, per-host configs and CURVE keys, and what the deploy commands print (--json), without
starting a node (fast)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zmq
import zmq.auth

from emulation.deploy import host_configs, load_deployment, make_keys, parse_deployment
from nodes.runtime.security import generate_keys, key_paths, load_curve_keys

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "scenarios" / "deploy-loopback.toml"


def run_cli(argv: list[str]) -> int:
    """`edgestage ARGS`, in this process: bad input is one line on stderr and exit 2."""
    from emulation.cli import main

    return main(argv)


def minimal(**deploy) -> dict:
    hosts = {"edge": {"role": "edge", "address": "tcp://10.0.0.1:5555"},
             "d1": {"role": "device", "address": "tcp://10.0.0.2:5555"}}
    # no cloud host: only the strategies that need none
    strategies = {"edge_only": {"kind": "edge_only"}, "device_only": {"kind": "device_only"}}
    return {"deploy": {"hosts": hosts, **deploy}, "strategies": strategies}


def test_the_shipped_loopback_file_gives_every_host_its_config(tmp_path):
    deployment = load_deployment(SHIPPED)
    configs = host_configs(deployment, base=tmp_path)
    assert set(configs) == {"cloud", "edge", "d1", "d2"}
    edge = configs["edge"]
    assert edge.is_coordinator and edge.bind == "tcp://127.0.0.1:56002" and edge.models == ["medium"]
    assert edge.peers["cloud"].endpoint == "tcp://127.0.0.1:56001" and edge.peers["cloud"].models == ["large"]
    assert edge.run_dir == tmp_path / "runs" / "deploy-loopback"
    curve = configs["d1"].security.curve
    assert curve.secret_key_file == tmp_path / "runs/deploy-loopback-keys/secret/d1.key_secret"
    assert curve.public_keys_dir == tmp_path / "runs/deploy-loopback-keys/public"
    # the workload is split over the devices, the same on every machine that reads the file
    requests = [r.request_id for c in configs.values() for r in c.workload]
    assert sorted(requests) == [f"r0-q{k:04d}" for k in range(8)]
    assert configs["d1"].workload and configs["d2"].workload and not configs["cloud"].workload
    assert host_configs(deployment, base=tmp_path) == configs


def test_without_keys_dir_nodes_speak_plain_tcp(tmp_path):
    configs = host_configs(parse_deployment(minimal()), base=tmp_path)
    assert all(c.security.curve is None for c in configs.values())
    assert configs["d1"].peers["edge"].endpoint == "tcp://10.0.0.1:5555"


@pytest.mark.parametrize("change, message", [
    ({"coordinator": "d1"}, "deploy.coordinator: 'd1' is not an edge host"),
    ({"colour": "red"}, "deploy.colour: unknown field"),
    ({"hosts": {"edge": {"role": "edge", "address": "tcp://a:1"},
                "d1": {"role": "device", "address": "tcp://a:1"}}}, "two hosts share one address"),
    ({"hosts": {"edge": {"role": "edge", "address": "tcp://a:1"},
                "c": {"role": "cloud", "address": "tcp://b:1"}}}, "no host has role 'device'"),
    ({"hosts": {"c": {"role": "cloud", "address": "tcp://a:1"},
                "d1": {"role": "device", "address": "tcp://b:1"}}}, "no host has role 'edge'"),
    ({"hosts": {"edge": {"role": "edge", "address": "10.0.0.1:5555"},
                "d1": {"role": "device", "address": "tcp://b:1"}}}, "expected tcp://ADDRESS:PORT"),
    ({"hosts": {"edge": {"role": "router", "address": "tcp://a:1"},
                "d1": {"role": "device", "address": "tcp://b:1"}}}, "deploy.hosts.edge.role"),
])
def test_bad_deploy_files_are_refused_with_one_line(tmp_path, capsys, change, message):
    data = minimal()
    data["deploy"].update(change)
    path = tmp_path / "bad.toml"
    path.write_text(_toml(data))
    assert run_cli(["deploy", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"edgestage: error: {path}") and message in err


def _toml(data: dict) -> str:
    spec = data["deploy"]
    lines = ["[deploy]"] + [f'{k} = "{v}"' for k, v in spec.items() if k != "hosts"]
    for name, host in spec["hosts"].items():
        lines += [f"[deploy.hosts.{name}]"] + [f'{k} = "{v}"' for k, v in host.items()]
    for name, strategy in data.get("strategies", {}).items():
        lines += [f"[strategies.{name}]"] + [f'{k} = "{v}"' for k, v in strategy.items()]
    return "\n".join(lines) + "\n"


def test_an_unknown_host_and_a_missing_file_exit_2(tmp_path, capsys):
    path = tmp_path / "ok.toml"
    path.write_text(_toml(minimal()))
    assert run_cli(["deploy", str(path), "--host", "mallory"]) == 2
    assert "host 'mallory' is not in deploy.hosts (edge, d1)" in capsys.readouterr().err
    assert run_cli(["deploy", str(tmp_path / "nope.toml"), "--all"]) == 2
    assert "deploy file not found" in capsys.readouterr().err
    assert run_cli(["deploy-keys", str(path)]) == 2
    assert "deploy.keys_dir is not set" in capsys.readouterr().err


def test_keys_are_made_once_per_deployment_with_private_secrets(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text(_toml(minimal(keys_dir=str(tmp_path / "keys"))))
    assert run_cli(["deploy-keys", str(path)]) == 0
    keys = tmp_path / "keys"
    publics = set()
    for host in ("edge", "d1"):
        public, secret = key_paths(keys, host)
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
        pub, sec = zmq.auth.load_certificate(str(secret))
        assert zmq.auth.load_certificate(str(public)) == (pub, None) and len(sec) == 40
        publics.add(pub)
    assert len(publics) == 2  # one pair per host
    assert stat.S_IMODE(os.stat(keys / "secret").st_mode) == 0o700
    assert run_cli(["deploy-keys", str(path)]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err


def test_a_node_config_with_missing_or_exposed_keys_is_refused(tmp_path):
    deployment = parse_deployment(minimal(keys_dir="keys"))
    configs = host_configs(deployment, base=tmp_path)
    with pytest.raises(ValueError, match="cannot read CURVE secret key"):
        load_curve_keys(configs["d1"])
    generate_keys(tmp_path / "keys", ["d1"])  # the edge's public key is missing
    with pytest.raises(ValueError, match=r"cannot read CURVE public key .*edge\.key"):
        load_curve_keys(configs["d1"])
    generate_keys(tmp_path / "keys", ["edge"])
    keys = load_curve_keys(configs["d1"])
    assert set(keys.peers) == {"edge", "d1"}
    os.chmod(key_paths(tmp_path / "keys", "d1")[1], 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        load_curve_keys(configs["d1"])


def test_make_keys_uses_keys_dir_relative_to_base(tmp_path):
    directory = make_keys(parse_deployment(minimal(keys_dir="k")), base=tmp_path)
    assert directory == tmp_path / "k" and (directory / "public" / "edge.key").is_file()


def test_a_strategy_that_needs_a_role_without_hosts_is_refused(tmp_path, capsys):
    """The check a scenario gets (one experiment schema): cloud_only with no cloud host."""
    data = minimal()
    del data["strategies"]  # the defaults include cloud_only and fixed_split
    path = tmp_path / "d.toml"
    path.write_text(_toml(data))
    assert run_cli(["deploy", str(path), "--check"]) == 2
    assert "strategies.cloud_only: needs a cloud host, deploy.hosts has none" in capsys.readouterr().err


def test_deploy_check_json_is_one_document_of_the_file_s_hosts(capsys):
    assert run_cli(["deploy", str(SHIPPED), "--check", "--json"]) == 0
    printed = capsys.readouterr()
    doc = json.loads(printed.out)  # the whole of stdout
    assert doc["deploy_file"] == str(SHIPPED) and doc["ok"] is True and doc["coordinator"] == "edge"
    assert doc["requests"] == 8 and doc["curve"] is True and doc["keys_dir"] == "runs/deploy-loopback-keys"
    assert doc["hosts"]["d1"] == {"role": "device", "address": "tcp://127.0.0.1:56011",
                                  "bind": "tcp://127.0.0.1:56011"}
    assert list(doc["hosts"]) == ["cloud", "edge", "d1", "d2"] and "cloud_only" in doc["strategies"]
    assert printed.err == ""


def test_deploy_keys_json_names_each_host_s_key_files(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text(_toml(minimal(keys_dir=str(tmp_path / "keys"))))
    assert run_cli(["deploy-keys", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["keys_dir"] == str(tmp_path / "keys")
    assert doc["hosts"] == {host: dict(zip(("public", "secret"), map(str, key_paths(tmp_path / "keys", host)),
                                           strict=True)) for host in ("edge", "d1")}
    assert all(Path(p).is_file() for files in doc["hosts"].values() for p in files.values())


class FakeCluster:
    """deploy_cluster's LocalCluster without a process: its hosts' pids, its devices' workload
    over at once, or its servers serving until stopped."""

    def __init__(self, hosts: list[str], devices: list[str]) -> None:
        self.nodes = {host: SimpleNamespace(pid=1000 + i) for i, host in enumerate(hosts)}
        self.devices = devices

    def __enter__(self) -> FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wait_workload(self, timeout: float) -> dict:
        return {}

    def wait_stopped(self, stop) -> None:
        return None  # as after SIGTERM


@pytest.mark.parametrize("hosts", [["d1"], ["edge"]], ids=["device", "server"])
def test_deploy_json_gives_the_run_directory_hosts_and_summary(tmp_path, monkeypatch, capsys, hosts):
    """`deploy --host H --json` with the node processes and the end-of-run pipeline faked: stdout is
    one document, NaN null and numpy numbers plain; the "started" line goes to stderr.  A server
    alone records nothing: its summary is null."""
    from emulation import deploy

    summary = {"strategies": {"edge_only": {"done": np.int64(2), "failed": 0,
                                            "latency_p50_s": np.float64(0.5), "fid": float("nan")}}}
    devices = [h for h in hosts if h == "d1"]
    monkeypatch.setattr(deploy, "deploy_cluster", lambda configs, chosen: FakeCluster(chosen, devices))
    monkeypatch.setattr(deploy, "finish_deployment", lambda *_: SimpleNamespace(summary=summary))
    monkeypatch.chdir(tmp_path)  # run_dir is taken from here
    path = tmp_path / "d.toml"
    path.write_text(_toml(minimal()))
    assert run_cli(["deploy", str(path), "--host", hosts[0], "--json"]) == 0
    printed = capsys.readouterr()
    expected = {"strategies": {"edge_only": {"done": 2, "failed": 0, "latency_p50_s": 0.5, "fid": None}}}
    run_dir = tmp_path / "runs" / "deploy"
    assert json.loads(printed.out) == {"run_dir": str(run_dir), "started": {hosts[0]: 1000},
                                       "summary": expected if devices else None}
    assert printed.err.startswith(f"started {hosts[0]} (pids 1000)")
    assert run_cli(["deploy", str(path), "--host", hosts[0]]) == 0  # the text as before
    assert capsys.readouterr().out.splitlines()[-1] == f"run directory: {run_dir}"
