"""From a campaign to a paper's figure and table: each strategy's mean latency over every request
of every repetition with its 95 % interval, and its mean latency against a reference strategy's on
the same requests (paired: same repetition, same request id) with its interval and a Wilcoxon
signed-rank p-value.  Usage, on the directory of `edgestage campaign ... --strategies each`:

    .venv/bin/python examples/campaign_figure.py CAMPAIGN_DIR [--reference cloud_only] [--out DIR]

Writes OUT/latency.png and .pdf (the figure) and OUT/latency.csv and .tex (booktabs); OUT
defaults to CAMPAIGN_DIR/paper.  Needs no torch: pandas, scipy and matplotlib.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.load import load_runs  # noqa: E402
from analysis.outputs import save_figure, write_table  # noqa: E402
from analysis.statistics import mean_interval, paired_ratio  # noqa: E402


def latency_by_request(campaign_dir: str | Path) -> pd.DataFrame:
    """One row per (repetition, request id), one column per strategy: emulated seconds of the
    requests that completed."""
    requests = load_runs(campaign_dir).requests
    first = requests[(requests["stage_index"].fillna(0) == 0) & (requests["outcome"] == "ok")]
    return first.pivot_table(index=["campaign_repetition", "request_id"], columns="campaign_strategy",
                             values="total_s")


def strategy_table(latency: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per strategy: requests, mean latency with its interval, and the paired ratio against
    `reference` with its interval, p-value and number of pairs."""
    rows = []
    for strategy in latency.columns:
        mean = mean_interval(latency[strategy].dropna())
        paired = paired_ratio(latency[strategy], latency[reference])
        rows.append({"strategy": strategy, "requests": mean.n, "latency_mean_s": mean.estimate,
                     "latency_mean_ci_low_s": mean.low, "latency_mean_ci_high_s": mean.high,
                     f"ratio_to_{reference}": paired.ratio, "ratio_ci_low": paired.low,
                     "ratio_ci_high": paired.high, "wilcoxon_p": paired.p_value, "pairs": paired.n_pairs})
    return pd.DataFrame(rows)


def latency_figure(table: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3))
    low = table["latency_mean_s"] - table["latency_mean_ci_low_s"]
    high = table["latency_mean_ci_high_s"] - table["latency_mean_s"]
    ax.errorbar(table["strategy"], table["latency_mean_s"], yerr=[low, high], fmt="o", capsize=4)
    ax.set(ylabel="mean latency (emulated s)", title="mean latency, 95 % bootstrap interval")
    ax.set_ylim(bottom=0)
    return save_figure(fig, out / "latency.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign_dir")
    parser.add_argument("--reference", default="cloud_only")
    parser.add_argument("--out")
    args = parser.parse_args()
    latency = latency_by_request(args.campaign_dir)
    if args.reference not in latency.columns:
        parser.error(f"--reference {args.reference}: not a strategy of this campaign "
                     f"({', '.join(map(str, latency.columns))})")
    out = Path(args.out) if args.out else Path(args.campaign_dir) / "paper"
    table = strategy_table(latency, args.reference)
    shown = table.astype(object).map(lambda v: "" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float)
                                     else v)
    write_table(table, out, "latency", shown)
    print(f"{latency_figure(table, out)} (and .pdf), {out / 'latency.tex'} (and .csv)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
