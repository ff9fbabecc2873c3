"""How far a run's measurements can be trusted: accuracy.json.

- transfers: every message between two hosts (uplink request, dispatch, state between stages,
  result), measured time (from the records: sender's send call to receiver's arrival stamp; hosts
  share one clock) against what the configured links predict, payload / bottleneck bandwidth +
  sum of one-way delays along the route, each link as it was when the message was sent (its
  changes from link_events.jsonl: traces, channel model, faults); the ratio measured / predicted.
  Loss, jitter, queueing behind other messages, ZeroMQ's I/O threads and TCP slow start all push
  the ratio above 1.
- request_prediction: each ok request's latency against profile step times (profiled stages)
  + its transfers' predictions (above) + its planning time; profiled runs only.
- planner_prediction: each ok request's latency against what the coordinator predicted when it
  chose the plan (its live estimates, not the configured links).
- latency_parts: each ok request's parts (uplink, planning, transfers, queueing, compute,
  handoffs, result transfer) against its measured total; the issue asks for 2 %.
- wire_overhead: bytes on the wire (data segments and the ACKs that answer them, per link) over
  the message's bytes and over its tensor bytes, per message kind and size (2 significant digits).
- accounting: per message per link, wire bytes against the nodes' message bytes plus a TCP/IP
  header per packet (HEADER_BYTES), i.e. payload plus protocol overhead, without using the
  captured payload lengths (and once more adding retransmitted payload); and whether the
  message length parsed from the capture equals the nodes' own count.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

# Ethernet 14 + IPv4 20 + TCP 20 + 12 bytes of options (timestamps) in every established segment
HEADER_BYTES = 66


def route(network: dict, src: str, dst: str) -> list[dict]:
    """The links a packet from src to dst crosses, from network.json's paths (the network computed
    them from its routes; every message has an edge or cloud host at one end)."""
    paths = network.get("paths", {})
    if src in paths and dst in paths[src]:
        names = paths[src][dst]
    elif dst in paths and src in paths[dst]:
        names = list(reversed(paths[dst][src]))
    else:
        return []
    links = {li["link"]: li for li in network.get("links", [])}
    return [links[name] for name in names]


class LinkStates:
    """Each link's figures at a time on the run's clock: network.json's, changed by every entry of
    link_events.jsonl (traces, channel model, faults, API calls) at or before that time.  Times
    and figures are emulated, as both files give them."""

    def __init__(self, network: dict, events: list[dict] | None = None) -> None:
        self.network = network
        self.changes: dict[str, list[dict]] = {}
        for e in events or []:
            if e.get("link") and e.get("t") is not None:
                self.changes.setdefault(e["link"], []).append(e)
        for changes in self.changes.values():
            changes.sort(key=lambda e: e["t"])

    def at(self, link: dict, t: float | None, direction: str) -> dict | None:
        """The link's figures for `direction` ("a->b") at t; None while it is down."""
        state = dict(link)
        for e in self.changes.get(link["link"], []):
            if t is None or e["t"] > t:
                break
            if e.get("state") in ("down", "up"):
                state["down"] = e["state"] == "down"
            elif e.get("direction") in (None, direction):
                state.update({k: e[k] for k in ("bw_mbit", "delay_ms", "jitter_ms", "loss_pct") if k in e})
        return None if state.get("down") else state


def predicted_s(network: dict, src: str, dst: str, nbytes: int, t: float | None = None,
                states: LinkStates | None = None) -> tuple[float | None, list[str]]:
    """Payload / bottleneck bandwidth + the one-way delays along the route, with each link as it
    was at `t` (run's clock) where `states` has its changes; None if a link on it was down."""
    path = route(network, src, dst)
    if not path:
        return None, []
    states = states or LinkStates(network)
    here, figures = src, []
    for li in path:
        there = li["b"] if li["a"] == here else li["a"]
        figures.append(states.at(li, t, f"{here}->{there}"))
        here = there
    if any(f is None for f in figures):
        return None, [li["link"] for li in path]
    delay = sum(f["delay_ms"] for f in figures) / 1000.0
    bws = [f["bw_mbit"] for f in figures if f.get("bw_mbit")]
    serial = nbytes * 8 / (min(bws) * 1e6) if bws else 0.0
    return delay + serial, [li["link"] for li in path]


def cold_messages(traffic: pd.DataFrame | None) -> set[tuple]:
    """(request_id, kind, stage) of messages that were the first on their TCP connection on some
    link: their time includes the TCP and ZMTP handshakes (ZeroMQ connects on first use)."""
    if traffic is None or traffic.empty:
        return set()
    t = traffic[(traffic["part"] == "data") & (traffic["message_index"] == 0)].dropna(subset=["request_id"])
    return {(r, k, -1 if pd.isna(s) else int(s)) for r, k, s in zip(t["request_id"], t["kind"], t["stage"],
                                                                       strict=True)}


def transfers(requests: pd.DataFrame, network: dict, cold: set[tuple] | None = None,
              states: LinkStates | None = None) -> pd.DataFrame:
    """Every message between two hosts, measured against its prediction with the links as they
    were when it was sent (`states`: the run's link changes)."""
    states = states or LinkStates(network)
    ok = requests[(requests["outcome"] == "ok") & requests["stage_index"].notna()]
    rows = []
    coordinator = next((h["name"] for h in network.get("hosts", []) if h["role"] == "edge"), None)
    for rid, group in ok.groupby("request_id"):
        group = group.sort_values("stage_index")
        stages = group.to_dict("records")
        first = stages[0]
        sent = first.get("t_request_sent")
        legs = [("request", first["device"], coordinator, first["uplink_s"], None, ("request", -1), sent),
                ("dispatch", coordinator, first["host"], first["transfer_s"], None, ("stage", 0),
                 first.get("t_dispatched"))]
        for prev, cur in zip(stages, stages[1:], strict=False):
            legs.append(("state", prev["host"], cur["host"], cur["transfer_s"], cur["message_bytes"],
                         ("stage", int(cur["stage_index"])), prev.get("t_sent")))
        last = stages[-1]
        legs.append(("result", last["host"], first["device"], last["result_transfer_s"],
                     last["result_message_bytes"], ("result", -1), last.get("t_sent")))
        for kind, src, dst, measured, nbytes, message, t in legs:
            if src is None or dst is None or src == dst:
                continue  # on one host: no link crossed
            t = None if t is None or pd.isna(t) else float(t)
            expected, path = predicted_s(network, src, dst, int(nbytes or 0), t, states)
            rows.append({"request_id": rid, "strategy": first["strategy"], "transfer": kind, "src": src,
                         "dst": dst, "path": "+".join(path), "message_bytes": nbytes,
                         "cold_connection": (rid, *message) in (cold or set()), "measured_s": measured,
                         "predicted_s": expected, "ratio": measured / expected if expected else None})
    return pd.DataFrame(rows, columns=["request_id", "strategy", "transfer", "src", "dst", "path",
                                       "message_bytes", "cold_connection", "measured_s", "predicted_s",
                                       "ratio"])


def request_predictions(requests: pd.DataFrame, tr: pd.DataFrame) -> pd.DataFrame:
    """Per ok request whose every stage is profiled: its latency against the sum of its stages'
    profiled compute and its transfers' predictions (None where a transfer has none)."""
    ok = requests[(requests["outcome"] == "ok") & requests["stage_index"].notna()]
    rows = []
    for rid, group in ok.groupby("request_id"):
        profiled = group["profiled_compute_s"].astype(float)
        if profiled.isna().any():
            continue  # a native stage: nothing to predict its compute from
        legs = tr[tr["request_id"] == rid]["predicted_s"].astype(float)
        predicted = profiled.sum() + legs.sum() if not legs.isna().any() else None
        total = float(group["total_s"].iloc[0])
        rows.append({"request_id": rid, "strategy": group["strategy"].iloc[0], "measured_s": total,
                     "predicted_s": predicted, "ratio": total / predicted if predicted else None})
    return pd.DataFrame(rows, columns=["request_id", "strategy", "measured_s", "predicted_s", "ratio"])


def planner_predictions(requests: pd.DataFrame) -> pd.DataFrame:
    """Per ok request: the latency the coordinator predicted when it chose the plan
    (nodes/planning/planner.py, from its live estimates) against the measured one."""
    columns = ["request_id", "strategy", "plan", "measured_s", "predicted_s", "abs_error"]
    if "predicted_total_s" not in requests:
        return pd.DataFrame(columns=columns)
    first = requests[(requests["outcome"] == "ok") & (requests["stage_index"] == 0)]
    first = first[first["predicted_total_s"].notna()]
    out = pd.DataFrame({"request_id": first["request_id"], "strategy": first["strategy"],
                        "plan": first["plan"], "measured_s": first["total_s"].astype(float),
                        "predicted_s": first["predicted_total_s"].astype(float)})
    out["abs_error"] = (out["measured_s"] - out["predicted_s"]).abs() / out["measured_s"]
    return out.reset_index(drop=True)[columns]


def latency_parts(requests: pd.DataFrame) -> pd.DataFrame:
    ok = requests[(requests["outcome"] == "ok") & requests["stage_index"].notna()]
    parts = ["uplink_s", "planning_s", "transfer_s", "queueing_s", "compute_s", "handoff_s",
             "result_transfer_s"]
    sums = ok.groupby("request_id")[parts].sum().sum(axis=1)
    totals = ok.groupby("request_id")["total_s"].first()
    frame = pd.DataFrame({"parts_s": sums, "total_s": totals})
    frame["relative_error"] = (frame["parts_s"] - frame["total_s"]).abs() / frame["total_s"]
    return frame


def message_traffic(traffic: pd.DataFrame) -> pd.DataFrame:
    """Per message per link: data and ACK bytes/packets, and the captured ZMTP length."""
    t = traffic.dropna(subset=["request_id"])
    if t.empty:
        return pd.DataFrame()
    keys = ["request_id", "kind", "stage", "link"]
    t = t.assign(stage=t["stage"].astype("Int64").fillna(-1))
    data = t[t["part"] == "data"].groupby(keys).agg(
        wire_bytes=("wire_bytes", "sum"), packets=("packets", "sum"), packet_share=("packet_share", "sum"),
        tcp_payload_bytes=("tcp_payload_bytes", "sum"),
        retransmitted_packets=("retransmitted_packets", "sum"), zmtp_bytes=("zmtp_bytes", "first"),
        captured_message_bytes=("message_bytes", "first"))
    acks = t[t["part"] == "ack"].groupby(keys).agg(ack_wire_bytes=("wire_bytes", "sum"),
                                                   ack_packets=("packets", "sum"))  # ACKs are never shared
    out = data.join(acks, how="left").fillna({"ack_wire_bytes": 0, "ack_packets": 0}).reset_index()
    return out


def _records_bytes(requests: pd.DataFrame) -> pd.DataFrame:
    """The nodes' own counts per (request, kind, stage): all bytes of the message and its tensors'."""
    ok = requests[(requests["outcome"] == "ok") & requests["stage_index"].notna()]
    rows = []
    for r in ok.itertuples():
        rows.append({"request_id": r.request_id, "kind": "stage", "stage": int(r.stage_index),
                     "records_message_bytes": r.message_bytes, "records_payload_bytes": r.payload_bytes})
        if r.stage_index == r.stage_count - 1:
            rows.append({"request_id": r.request_id, "kind": "result", "stage": -1,
                         "records_message_bytes": r.result_message_bytes,
                         "records_payload_bytes": r.result_payload_bytes})
    frame = pd.DataFrame(rows, columns=["request_id", "kind", "stage", "records_message_bytes",
                                        "records_payload_bytes"])
    frame["stage"] = frame["stage"].astype("Int64")
    return frame


def size_bucket(nbytes: float) -> int:
    """Two significant digits: messages that differ by a few header bytes share a bucket."""
    if not nbytes or nbytes <= 0:
        return 0
    digits = int(math.floor(math.log10(nbytes))) - 1
    return int(round(nbytes, -digits)) if digits > 0 else int(nbytes)


def _stats(series: pd.Series) -> dict[str, Any]:
    s = series.dropna().astype(float)
    if s.empty:
        return {"n": 0}
    return {"n": int(len(s)), "mean": s.mean(), "p5": s.quantile(0.05), "p50": s.median(),
            "p95": s.quantile(0.95), "min": s.min(), "max": s.max()}


def _per_request(note: str, rows: pd.DataFrame, column: str) -> dict[str, Any]:
    """`column`'s statistics over the rows, and by strategy, with the rows themselves."""
    return {"note": note, column: _stats(rows[column]),
            "by_strategy": {k: _stats(g[column]) for k, g in rows.groupby("strategy")},
            "requests": rows.to_dict("records")}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def accuracy_report(requests: pd.DataFrame, traffic: pd.DataFrame, network: dict,
                    link_events: list[dict] | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if requests.empty or not network:
        return {"headline": {}}
    tr = transfers(requests, network, cold_messages(traffic), LinkStates(network, link_events))
    rp = request_predictions(requests, tr)
    report["request_prediction"] = _per_request(
        "measured latency / (profiled compute of its stages + its transfers' predictions); "
        "requests whose every stage is profiled", rp, "ratio")
    pp = planner_predictions(requests)
    report["planner_prediction"] = _per_request(
        "|measured - predicted| / measured latency per ok request; predicted by the coordinator "
        "when it chose the plan, from its live estimates (nodes/planning/planner.py)", pp, "abs_error")
    # astype(bool): an empty object column would otherwise be read as a list of column names
    cold = tr["cold_connection"].astype(bool)
    warm = tr[~cold]
    state = warm[warm["transfer"].isin(["state", "result"])]
    report["transfer_ratio"] = {
        "note": "measured / (message bytes / bottleneck bw + sum of one-way delays); warm: the "
                "message was not the first on its TCP connection (cold ones include the handshakes)",
        "warm": _stats(warm["ratio"]),
        "cold": _stats(tr[cold]["ratio"]),
        "warm_by_transfer": {k: _stats(g["ratio"]) for k, g in warm.groupby("transfer")},
        "warm_state_by_path": {k: {**_stats(g["ratio"]),
                                   "message_bytes_mean": g["message_bytes"].astype(float).mean()}
                               for k, g in state.groupby("path")},
    }
    report["transfers"] = tr.to_dict("records")
    lp = latency_parts(requests)
    report["latency_parts"] = {"requests": int(len(lp)),
                               "within_2pct": int((lp["relative_error"] <= 0.02).sum()),
                               "max_relative_error": lp["relative_error"].max() if len(lp) else None}
    mt = message_traffic(traffic) if traffic is not None and not traffic.empty else pd.DataFrame()
    if not mt.empty:
        rb = _records_bytes(requests)
        mt = mt.merge(rb, on=["request_id", "kind", "stage"], how="left")
        mt["total_wire_bytes"] = mt["wire_bytes"] + mt["ack_wire_bytes"]
        base = mt["records_message_bytes"].astype(float)
        headers = HEADER_BYTES * (mt["packet_share"] + mt["ack_packets"])
        mt["accounting_ratio"] = mt["total_wire_bytes"] / (base + headers)
        # retransmitted payload is protocol overhead too: the captured TCP payload beyond the
        # message's ZMTP-framed length
        resent = (mt["tcp_payload_bytes"] - mt["zmtp_bytes"].astype(float)).clip(lower=0)
        mt["accounting_ratio_with_retransmissions"] = mt["total_wire_bytes"] / (base + headers + resent)
        known = mt.dropna(subset=["records_message_bytes"])
        # overhead of every node message seen on the wire, by kind and size (the captured ZMTP
        # message length equals the nodes' count wherever both exist: see accounting)
        seen = mt.dropna(subset=["captured_message_bytes"]).copy()
        seen["size_bucket_bytes"] = seen["captured_message_bytes"].map(size_bucket)
        seen["overhead_ratio"] = seen["total_wire_bytes"] / seen["captured_message_bytes"].astype(float)
        payload = seen["records_payload_bytes"].astype(float)
        seen["wire_per_payload"] = seen["total_wire_bytes"] / payload.where(payload > 0)
        report["wire_overhead"] = [
            {"kind": kind, "size_bucket_bytes": int(size), "messages_on_links": int(len(g)),
             "message_bytes_mean": g["captured_message_bytes"].astype(float).mean(),
             "tensor_payload_bytes_mean": g["records_payload_bytes"].astype(float).mean(),
             "wire_bytes_mean": g["total_wire_bytes"].mean(),
             "wire_per_message_byte_p50": g["overhead_ratio"].median(),
             "wire_per_message_byte_max": g["overhead_ratio"].max(),
             "wire_per_tensor_byte_p50": g["wire_per_payload"].median(),
             "data_packets_p50": g["packets"].median(), "ack_packets_p50": g["ack_packets"].median()}
            for (kind, size), g in seen.groupby(["kind", "size_bucket_bytes"])]
        report["accounting"] = {
            "messages": int(len(known)),
            "captured_equals_records": int((known["captured_message_bytes"]
                                            == known["records_message_bytes"]).sum()),
            "ratio": _stats(known["accounting_ratio"]),
            "within_10pct": int(((known["accounting_ratio"] - 1).abs() <= 0.10).sum()),
            "ratio_with_retransmissions": _stats(known["accounting_ratio_with_retransmissions"]),
            "within_10pct_with_retransmissions": int(
                ((known["accounting_ratio_with_retransmissions"] - 1).abs() <= 0.10).sum()),
            "retransmitted_packets": int(known["retransmitted_packets"].sum()),
            "header_bytes_per_packet": HEADER_BYTES,
        }
    parts = report["latency_parts"]
    report["headline"] = {
        "state_transfer_ratio_warm_p50": _stats(state["ratio"]).get("p50"),
        "latency_parts_max_relative_error": parts["max_relative_error"],
        "latency_parts_within_2pct": f"{parts['within_2pct']}/{parts['requests']}",
        "wire_accounting_ratio_p50": report.get("accounting", {}).get("ratio", {}).get("p50"),
        "request_prediction_ratio_p50": _stats(rp["ratio"]).get("p50"),
        "request_prediction_n": int(rp["ratio"].notna().sum()),
        "planner_prediction_abs_error_p50": _stats(pp["abs_error"]).get("p50"),
        "planner_prediction_n": int(len(pp)),
    }
    return _clean(report)
