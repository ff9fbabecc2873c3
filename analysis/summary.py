"""Per-strategy aggregates of a run: what summary.json holds and the table `edgestage run` prints.

Per strategy: requests done and failed, latency (mean / p50 / p95 of each ok request's total, from
the device's send to the result's arrival), deadline hits, profiled-compute overruns, bytes on the
wire per image (every packet of the strategy's requests on every link it crossed, ACKs included,
divided by the images delivered) and per link, and quality of the delivered images pooled per strategy (FID,
KID, class accuracy: analysis/quality.py; FID on a few dozen images is biased upwards, compare
strategies within a run, not with figures from larger sets).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

TABLE_COLUMNS = [
    ("strategy", "strategy", "{}"), ("done", "done", "{}"), ("failed", "failed", "{}"),
    ("mean_s", "latency_mean_s", "{:.3f}"), ("p50_s", "latency_p50_s", "{:.3f}"),
    ("p95_s", "latency_p95_s", "{:.3f}"), ("fid", "fid", "{:.2f}"), ("kid", "kid", "{:.4f}"),
    ("class_acc", "class_accuracy", "{:.3f}"), ("wire_B/img", "wire_bytes_per_image", "{:,.0f}"),
]


def per_request(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per request (its first stage row carries the request-level fields)."""
    if requests.empty:
        return requests
    return requests.sort_values("stage_index", na_position="first").groupby("request_id", sort=False).first()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def summarize(requests: pd.DataFrame, traffic: pd.DataFrame, samples_dir: Path,
              quality: bool = True) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    reqs = per_request(requests)
    if reqs.empty:
        return out
    wire = pd.Series(dtype=float)
    by_link = pd.DataFrame()
    if traffic is not None and not traffic.empty:
        attributed = traffic.dropna(subset=["request_id"])
        wire = attributed.groupby("request_id")["wire_bytes"].sum()
        by_link = attributed.groupby(["request_id", "link"])["wire_bytes"].sum().unstack(fill_value=0.0)
    for strategy, group in reqs.groupby("strategy", sort=False):
        ok = group[group["outcome"] == "ok"]
        totals = ok["total_s"].astype(float)
        images = int(ok["n_images"].sum())
        rows = requests[requests["request_id"].isin(ok.index)]
        entry: dict[str, Any] = {
            "requests": len(group), "done": len(ok), "failed": int((group["outcome"] == "failed").sum()),
            "images": images,
            "failure_reasons": group.loc[group["outcome"] == "failed", "reason"].value_counts().to_dict(),
            "plans": ok["plan"].value_counts().to_dict(),
            "latency_mean_s": totals.mean() if len(ok) else None,
            "latency_p50_s": totals.quantile(0.5) if len(ok) else None,
            "latency_p95_s": totals.quantile(0.95) if len(ok) else None,
            "compute_s_mean": rows.groupby("request_id")["compute_s"].sum().mean() if len(ok) else None,
            "transfer_s_mean": (rows.groupby("request_id")[["transfer_s", "result_transfer_s"]].sum()
                                .sum(axis=1).mean()) if len(ok) else None,
            "deadline_met": int(ok["deadline_met"].fillna(False).astype(bool).sum())
            if ok["deadline_met"].notna().any() else None,
            "overrun_steps": int(rows["overrun_steps"].fillna(0).sum()),
            "wire_bytes": float(wire.reindex(ok.index).fillna(0).sum()) if len(wire) else None,
            "wire_bytes_per_image": (float(wire.reindex(ok.index).fillna(0).sum()) / images)
            if len(wire) and images else None,
            "payload_bytes_per_image": (float(rows["message_bytes"].fillna(0).sum()
                                              + rows["result_message_bytes"].fillna(0).sum()) / images)
            if images else None,
        }
        if not by_link.empty:  # where the strategy's bytes go: access links, backhaul ...
            links = by_link.reindex(ok.index).fillna(0.0).sum()
            entry["wire_bytes_by_link"] = {str(k): float(v) for k, v in links.items() if v > 0}
        if quality and images >= 2:
            entry.update(_quality(list(ok.index), samples_dir))
        out[str(strategy)] = {k: _clean(v) for k, v in entry.items()}
    return out


def _quality(request_ids: list[str], samples_dir: Path) -> dict[str, Any]:
    import torch

    from analysis.quality import quality_table
    from nodes.samples import load_samples

    images, labels = [], []
    for rid in request_ids:
        path = Path(samples_dir) / f"{rid}.npz"
        if path.is_file():
            s = load_samples(path)
            images.append(s.images)
            labels.append(s.labels)
    if sum(len(x) for x in images) < 2:
        return {}
    table = quality_table(torch.cat(images), torch.cat(labels))
    return {"fid": table["fid"], "kid": table["kid"], "kid_std": table["kid_std"],
            "class_accuracy": table["class_accuracy"], "quality_images": table["n"]}


def format_table(summary: dict[str, dict[str, Any]], title: str = "") -> str:
    header = [c[0] for c in TABLE_COLUMNS]
    body = []
    for strategy, entry in summary.items():
        row = []
        for _, key, fmt in TABLE_COLUMNS:
            value = strategy if key == "strategy" else entry.get(key)
            row.append("-" if value is None else fmt.format(value))
        body.append(row)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                              strict=True))))
    for r in body:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths,
                                                                                                strict=True))))
    return "\n".join(lines)


def format_accuracy(headline: dict[str, Any]) -> str:
    """Two lines under the table: how far the figures above can be trusted (accuracy.json)."""
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    return (f"state transfer time / (bytes/bw + delay), warm connections, p50: "
            f"{fmt(headline.get('state_transfer_ratio_warm_p50'), '.2f')}; "
            f"latency parts add up (within 2 %): {headline.get('latency_parts_within_2pct', '-')}\n"
            f"wire bytes / (payload + 66 B per packet), p50: "
            f"{fmt(headline.get('wire_accounting_ratio_p50'), '.3f')}  (details: accuracy.json)")


def format_memory(memory: dict[str, Any]) -> str:
    """One line: the node processes' memory while all were up (summary.json's node_memory)."""
    if not memory:
        return "node memory: not measured (no node was running)"
    return (f"node memory, MB, all nodes up: PSS per node median {memory['node_pss_median_mb']:.0f}, "
            f"max {memory['node_pss_max_mb']:.0f} (RSS max {memory['node_rss_max_mb']:.0f}, shared pages "
            f"counted in full); nodes and launcher together {memory['total_pss_mb']:.0f}")
