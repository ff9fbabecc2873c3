"""Deploy files, per-host configs and CURVE keys, without starting a node (fast)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
