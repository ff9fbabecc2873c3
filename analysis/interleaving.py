"""The strategies of one run are interleaved in rounds (emulation/workload.py: a round is one
request, its device, labels and image seed, sent through every strategy): what pairs them, and how
much their interleaving made them share the network.

- `round_latencies(first)`: each strategy's completed requests' latencies (total_s, emulated s),
  indexed by their round, `(repetition, seed)`, so that analysis/compare_tables.py's
  `paired_table` pairs a strategy's request with the reference's request of the same round.
- `paired_rounds(first)`: those pairs against a reference strategy (`cloud_only` where it ran):
  the ratio of mean latencies with its 95 % bootstrap interval and the Wilcoxon signed-rank p
  (analysis/statistics.py), one row per strategy.
- `overlaps(first)`: per request, how many other measured requests were in flight at some moment
  between its send and its result (`overlapping`), and how many of those its own device sent
  (`overlapping_same_device`: they shared its access link).  The rounds turn the strategies'
  order so that this load falls on each alike; these columns say how much there was, so that a
  difference between strategies can be read against it.

A row of `first` is a request's first stage row (analysis/summary.py's `per_request`), warm-ups
left out; a run with one strategy has rounds of one request and nothing to pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROUND = ["repetition", "seed"]  # what the requests of a round share, and no other request


def pair_key(first: pd.DataFrame) -> pd.Series:
    """What pairs a request with the same request through another strategy: in a run of several
    strategies its round (`r<repetition>-s<seed>`), in a run of one (a compare's or a campaign's
    strategy alone: the same workload through each run) its request id.  Runs are told apart by
    `run_id` where `first` has it (analysis/load.py), else it is one run."""
    ids = pd.Series(first.get("request_id", first.index), index=first.index).astype(str)
    if not {"repetition", "seed"} <= set(first.columns):  # a frame that does not say: one per request
        return ids
    runs = first["run_id"] if "run_id" in first else pd.Series("", index=first.index)
    several = first.groupby(runs)["strategy"].transform("nunique") > 1
    rounds = ("r" + first["repetition"].astype("Int64").astype(str)
              + "-s" + first["seed"].astype("Int64").astype(str))
    return rounds.where(several, ids)


def round_latencies(first: pd.DataFrame) -> dict[str, pd.Series]:
    """Strategy -> latency (emulated s) of each of its completed requests, by round."""
    ok = first[first["outcome"] == "ok"]
    out = {}
    for strategy, group in ok.groupby("strategy", sort=False):
        index = pd.MultiIndex.from_frame(group[ROUND].astype("int64"))
        latency = pd.Series(group["total_s"].astype(float).to_numpy(), index=index)
        out[str(strategy)] = latency[~latency.index.duplicated()]
    return out


def paired_rounds(first: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Each strategy against the reference on the rounds both completed (compare_tables'
    PAIRED_COLUMNS); empty where the run has one strategy or nothing completed."""
    from analysis.compare_tables import PAIRED_COLUMNS, paired_table

    latencies = round_latencies(first)
    if len(latencies) < 2:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    return paired_table(latencies, reference)


def overlaps(first: pd.DataFrame) -> pd.DataFrame:
    """`overlapping` and `overlapping_same_device` per request (the module docstring), indexed as
    `first`.  A request's time runs from its send to its result; a failed one's to its failure
    where the record has it, else it is a moment."""
    sent = first["t_request_sent"].astype(float).to_numpy()
    took = first["total_s"].astype(float).fillna(0.0).to_numpy()
    end = sent + took
    known = ~np.isnan(sent)
    # i and j overlap where each began before the other ended
    both = (sent[:, None] < end[None, :]) & (sent[None, :] < end[:, None]) & known[:, None] & known[None, :]
    np.fill_diagonal(both, False)
    device = first["device"].astype(str).to_numpy()
    same = device[:, None] == device[None, :]
    return pd.DataFrame({"overlapping": both.sum(axis=1),
                         "overlapping_same_device": (both & same).sum(axis=1)}, index=first.index)
