"""Scripted sweep: where should the large model hand over to the small one?

Runs locally (no emulated network): for each handover step k, the plan large:0-k,small:k-T, and
prints quality against the fraction of steps the large model ran. Usage:

    .venv/bin/python examples/split_sweep.py [--n 200] [--steps 50] [--out sweep.csv]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.plan_quality import compare_plans  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default="split_sweep.csv")
    args = parser.parse_args()
    T = args.steps
    handovers = list(range(0, T + 1, T // 5))
    plans = [
        f"small:0-{T}" if k == 0 else f"large:0-{T}" if k == T else f"large:0-{k},small:{k}-{T}"
        for k in handovers
    ]
    table = compare_plans(plans, n=args.n, steps=T)
    table.insert(1, "large_step_fraction", [k / T for k in handovers])
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(table["large_step_fraction"], table["fid"], marker="o")
    left.set(xlabel="fraction of steps on large", ylabel="FID (classifier features)")
    right.plot(table["large_step_fraction"], table["class_accuracy"], marker="o")
    right.set(xlabel="fraction of steps on large", ylabel="class accuracy")
    fig.tight_layout()
    png = args.out.rsplit(".", 1)[0] + ".png"
    fig.savefig(png, dpi=120)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
