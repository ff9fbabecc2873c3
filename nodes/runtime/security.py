"""ZeroMQ CURVE between nodes: keys per deployment, encryption, and a refusal of unknown peers.

Keys are zmq.auth certificate files, one pair per host, made by `generate_keys` (CLI:
`edgestage deploy-keys DIR --hosts a,b,c`):
    DIR/public/<host>.key          public key; copy the whole folder to every machine
    DIR/secret/<host>.key_secret   secret (and public) key, mode 0600; only on <host>'s machine

Every node's inbox (PULL, bound) is a CURVE server whose ZAP authenticator admits only clients
whose public key is in `public_keys_dir`: a client with another key, or without CURVE, fails the
handshake and not one of its messages reaches the node (the receiver counts the refused
handshakes as `handshake_refused`).  Every PUSH socket is a CURVE client that knows the public
key of the peer it connects to, so it talks only to that peer.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from nodes.runtime.node_config import CurveConfig, NodeConfig

PUBLIC_DIR = "public"
SECRET_DIR = "secret"
# the handshake failures a CURVE server's monitor reports for a refused peer
REFUSED_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass(frozen=True)
class CurveKeys:
    public: bytes  # Z85 public key of this host
    secret: bytes  # Z85 secret key of this host
    peers: dict[str, bytes]  # host -> Z85 public key, for every peer this node sends to
    allowed_dir: Path  # the public keys the authenticator admits


def key_paths(directory: Path, host: str) -> tuple[Path, Path]:
    """(public, secret) key files of `host` in a deployment's key folder."""
    return directory / PUBLIC_DIR / f"{host}.key", directory / SECRET_DIR / f"{host}.key_secret"


def curve_config(directory: Path, host: str) -> CurveConfig:
    public, secret = key_paths(directory, host)
    return CurveConfig(secret_key_file=secret, public_keys_dir=public.parent)


def generate_keys(directory: Path, hosts: list[str]) -> dict[str, tuple[Path, Path]]:
    """A fresh key pair per host (zmq.curve_keypair, via zmq.auth); refuses to overwrite keys."""
    if not hosts:
        raise ValueError("deploy-keys: no hosts given")
    directory = Path(directory)
    existing = [p for h in hosts for p in key_paths(directory, h) if p.exists()]
    if existing:
        raise ValueError(f"key file {existing[0]} already exists: keys are made once per deployment")
    (directory / PUBLIC_DIR).mkdir(parents=True, exist_ok=True)
    secret_dir = directory / SECRET_DIR
    secret_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(secret_dir, 0o700)  # mkdir's mode is cut by the umask; the folder guards the window below
    made = {}
    for host in hosts:
        public, secret = zmq.auth.create_certificates(str(secret_dir), host)
        os.chmod(secret, 0o600)
        public_path, secret_path = key_paths(directory, host)
        shutil.move(public, public_path)
        os.chmod(public_path, 0o644)
        made[host] = (public_path, Path(secret))
    return made


def _read_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CURVE public key {path}: {exc}") from None
    return public


def load_curve_keys(config: NodeConfig) -> CurveKeys | None:
    """This node's keys and its peers' public keys; None without CURVE. ValueError, one line."""
    curve = config.security.curve
    if curve is None:
        return None
    try:
        public, secret = zmq.auth.load_certificate(str(curve.secret_key_file))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CURVE secret key {curve.secret_key_file}: {exc}") from None
    if not secret:
        raise ValueError(f"{curve.secret_key_file} holds no secret key (is it a public .key file?)")
    if curve.secret_key_file.stat().st_mode & 0o077:
        raise ValueError(f"{curve.secret_key_file} is readable by others: chmod 600 it")
    if not curve.public_keys_dir.is_dir():
        raise ValueError(f"CURVE public_keys_dir {curve.public_keys_dir} is not a folder")
    peers = {host: _read_public(curve.public_keys_dir / f"{host}.key") for host in config.peers}
    peers[config.host] = public  # a device that runs the last stage sends the result to itself
    return CurveKeys(public=public, secret=secret, peers=peers, allowed_dir=curve.public_keys_dir)


def start_authenticator(context: zmq.Context, keys: CurveKeys) -> ThreadAuthenticator:
    """The ZAP handler of `context`: CURVE clients with a public key from `allowed_dir` only.
    Start it before binding, so that no handshake is ever answered without it."""
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.allowed_dir))
    return auth


def secure_server(sock: zmq.Socket, keys: CurveKeys) -> None:
    """Before bind: this socket answers CURVE handshakes only, as this host."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def secure_client(sock: zmq.Socket, keys: CurveKeys, host: str) -> None:
    """Before connect: a CURVE client that accepts only `host`'s server key."""
    if host not in keys.peers:
        raise RuntimeError(f"no CURVE public key known for host {host!r}")
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.peers[host]
