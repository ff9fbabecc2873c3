"""tc command lines for one direction of a link, shaped at the sender's egress.

The layout is Mininet's `TCIntf` layout, so a researcher who knows Mininet finds what they
expect: `root 5:0 htb default 1`, `class 5:1 htb rate BW burst 15k`, and a leaf `10:` under it —
`netem` (delay, jitter, loss, limit) on the netem backend, or a plain `pfifo limit N` on the
userspace backend, where delay, jitter and loss happen at the receiver (emulation.nfq_impair).
Keeping fixed handles lets time-varying links change the rate in place (`tc class change`)
without tearing anything down.

Jitter on the netem backend is netem's own (`distribution normal`, which reorders packets
whose delays cross); the userspace backend keeps packet order (see emulation.nfq_impair).
"""

from __future__ import annotations

from topologies.spec import LinkShape

HTB_BURST = "15k"  # what Mininet uses


def netem_args(d: LinkShape) -> str:
    args = []
    if d.delay_ms > 0 or d.jitter_ms > 0:
        args.append(f"delay {d.delay_ms:g}ms")
        if d.jitter_ms > 0:
            args.append(f"{d.jitter_ms:g}ms distribution normal")
    if d.loss_pct > 0:
        args.append(f"loss {d.loss_pct:g}%")
    if d.queue_pkts is not None:
        args.append(f"limit {d.queue_pkts}")
    return " ".join(args)


def setup_commands(intf: str, d: LinkShape, backend: str, force_htb: bool = False) -> list[str]:
    """tc commands that configure `intf`'s egress (run inside the sender's namespace).

    `force_htb` installs HTB even for an unshaped link (at a very high rate), so that a
    time-varying link can later change its rate in place.
    """
    bw = d.bw_mbit if d.bw_mbit is not None else (100000.0 if force_htb else None)
    netem = backend == "netem" and (d.impaired or d.queue_pkts is not None)
    cmds: list[str] = []
    if bw is not None:
        cmds.append(f"tc qdisc add dev {intf} root handle 5:0 htb default 1")
        cmds.append(
            f"tc class add dev {intf} parent 5:0 classid 5:1 htb rate {bw:g}mbit burst {HTB_BURST}"
        )
        parent = "parent 5:1"
    else:
        parent = "root"
    if netem:
        cmds.append(f"tc qdisc add dev {intf} {parent} handle 10: netem {netem_args(d)}")
    elif d.queue_pkts is not None:
        cmds.append(f"tc qdisc add dev {intf} {parent} handle 10: pfifo limit {d.queue_pkts}")
    return cmds


def rate_change_command(intf: str, bw_mbit: float) -> list[str]:
    return [
        "tc", "class", "change", "dev", intf, "parent", "5:0", "classid", "5:1",
        "htb", "rate", f"{bw_mbit:g}mbit", "burst", HTB_BURST,
    ]


def netem_change_command(intf: str, d: LinkShape, has_htb: bool) -> list[str]:
    """`replace`, not `change`: it also installs the netem leaf on a link that had none."""
    parent = ["parent", "5:1"] if has_htb else ["root"]
    args = netem_args(d) or "delay 0ms"
    return ["tc", "qdisc", "replace", "dev", intf, *parent, "handle", "10:", "netem", *args.split()]
