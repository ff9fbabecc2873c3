"""Scripted sweep on the emulated network: how does the backhaul's bandwidth change each strategy's
latency? Runs the smoke scenario once per backhaul rate (as root) and plots median latency.

    sudo .venv/bin/python examples/backhaul_sweep.py [--rates 2 10 50] [--out runs/backhaul-sweep]
"""

from __future__ import annotations

import argparse
import copy
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from emulation.runner import run_scenario  # noqa: E402
from emulation.scenario import parse_scenario  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="scenarios/smoke.toml")
    parser.add_argument("--rates", type=float, nargs="+", default=[2.0, 10.0, 50.0], help="Mbit/s")
    parser.add_argument("--out", default="runs/backhaul-sweep")
    args = parser.parse_args()
    base = tomllib.loads(Path(args.scenario).read_text())
    rows = []
    for rate in args.rates:
        data = copy.deepcopy(base)
        data["topology"]["backhaul"]["bw_mbit"] = rate
        data["name"] = f"backhaul-{rate:g}mbit"
        result = run_scenario(parse_scenario(data), Path(args.out) / f"bw-{rate:g}", quality=False)
        per_request = result.requests.drop_duplicates("request_id")
        done = per_request[per_request["outcome"] == "ok"]
        for strategy, latency in done.groupby("strategy")["total_s"]:
            rows.append({"backhaul_mbit": rate, "strategy": strategy, "p50_latency_s": latency.median()})
    table = pd.DataFrame(rows)
    table.to_csv(Path(args.out) / "sweep.csv", index=False)
    print(table.pivot(index="backhaul_mbit", columns="strategy", values="p50_latency_s").to_string())
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for strategy, group in table.groupby("strategy"):
        ax.plot(group["backhaul_mbit"], group["p50_latency_s"], marker="o", label=strategy)
    ax.set(xscale="log", xlabel="backhaul bandwidth (Mbit/s)", ylabel="median latency (s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(args.out) / "sweep.png", dpi=120)
    print(f"wrote {args.out}/sweep.csv and sweep.png")


if __name__ == "__main__":
    main()
