"""analysis/load.py: one run, many runs, or a directory of runs into pandas, on copies of a real
smoke run (tests/data/smoke-run); the schema version each file carries (analysis/schema.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.load import find_runs, load_run, load_runs
from analysis.run_tables import TRAFFIC_WALL_FIELDS, run_clock, with_emulated
from analysis.schema import PARQUET_KEY, SCHEMA_VERSION, write_parquet
from analysis.traffic import parse_run_traffic

from .conftest import SMOKE_RUN

REQUESTS = pd.read_parquet(SMOKE_RUN / "requests.parquet")
MEASURED = REQUESTS[REQUESTS["warmup"].ne(True)]
WARM = "r0-q0001"  # the request the campaign's second run marks as a warm-up


def _edit_json(path: Path, **changes) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


@pytest.fixture
def campaign(tmp_path) -> Path:
    """Two copies of the smoke run under one directory: `a` as made, `b` with another status,
    one request turned into a warm-up, and its traffic.parquet written as the pipeline writes it."""
    root = tmp_path / "campaign"
    a, b = root / "a", root / "b"
    shutil.copytree(SMOKE_RUN, a)
    shutil.copytree(SMOKE_RUN, b)
    _edit_json(b / "manifest.json", status="interrupted")
    requests = REQUESTS.assign(warmup=REQUESTS["request_id"].eq(WARM))
    requests.to_parquet(b / "requests.parquet", index=False)
    manifest = json.loads((b / "manifest.json").read_text())
    traffic = parse_run_traffic(b / "pcap", manifest["network"])
    write_parquet(with_emulated(traffic, run_clock(manifest), TRAFFIC_WALL_FIELDS), b / "traffic.parquet")
    return root


def test_the_smoke_run_alone_loads_its_measured_requests():
    tables = load_runs(SMOKE_RUN)
    assert len(tables.requests) == len(MEASURED) == 12
    assert set(tables.requests["run_id"]) == {"smoke-run"} and tables.requests.columns[0] == "run_id"
    assert tables.requests["request_id"].nunique() == 8
    pd.testing.assert_frame_equal(tables.requests.drop(columns="run_id"), MEASURED.reset_index(drop=True))
    run = tables.runs.set_index("run_id").loc["smoke-run"]
    assert run["scenario"] == "smoke" and run["status"] == "completed" and run["time_dilation"] == 1.0
    assert run["strategies"] == "cloud_only,edge_only,device_only,fixed_split"
    assert run["commit"] == "23cae8c2e018a562e98d136373043aefda04d3f1"
    assert run["requests_ok"] == 8 and run["schema_version"] == 1  # written before versions were
    assert tables.traffic.empty and list(tables.traffic.columns) == ["run_id"]  # the fixture has none
    assert tables["requests"] is tables.requests


def test_a_campaign_directory_loads_every_run_with_distinct_ids(campaign):
    assert find_runs(campaign) == [campaign / "a", campaign / "b"]  # not the runs' own folders
    tables = load_runs(campaign)
    assert list(tables.runs["run_id"]) == ["a", "b"]
    assert tables.runs.set_index("run_id")["status"].to_dict() == {"a": "completed", "b": "interrupted"}
    per_run = tables.requests.groupby("run_id").size().to_dict()
    warm_rows = int(REQUESTS["request_id"].eq(WARM).sum())
    assert warm_rows >= 1 and per_run == {"a": len(MEASURED), "b": len(MEASURED) - warm_rows}
    assert WARM not in set(tables.requests.loc[tables.requests["run_id"] == "b", "request_id"])
    # the warm-up's messages leave the traffic with it; the rest of the capture stays
    traffic = pd.read_parquet(campaign / "b" / "traffic.parquet")
    assert set(tables.traffic["run_id"]) == {"b"}
    assert len(tables.traffic) == int((traffic["request_id"] != WARM).sum()) < len(traffic)


def test_warm_ups_are_kept_when_asked_for(campaign):
    tables = load_runs(campaign, warmup=True)
    assert tables.requests.groupby("run_id").size().to_dict() == {"a": len(REQUESTS), "b": len(REQUESTS)}
    b = tables.requests[tables.requests["run_id"] == "b"]
    assert set(b.loc[b["warmup"], "request_id"]) == {WARM}
    assert len(tables.traffic) == len(pd.read_parquet(campaign / "b" / "traffic.parquet"))


def test_a_list_of_runs_is_named_relative_to_their_common_parent(campaign, tmp_path):
    other = tmp_path / "elsewhere" / "a"
    shutil.copytree(SMOKE_RUN, other)
    tables = load_runs([campaign / "a", other])
    assert list(tables.runs["run_id"]) == ["campaign/a", "elsewhere/a"]
    assert tables.requests.groupby("run_id").size().to_dict() == {"campaign/a": 12, "elsewhere/a": 12}
    assert list(load_runs([campaign / "a", campaign / "b"]).runs["run_id"]) == ["a", "b"]


def test_a_compare_and_a_sweep_give_their_varied_fields(campaign):
    (campaign / "compare.json").write_text(json.dumps(
        {"runs": ["a", "b"], "strategies": ["a"], "oracle_candidates": {"large:0-10@cloud": "b"}}))
    runs = load_runs(campaign).runs.set_index("run_id")
    assert runs["campaign"].tolist() == ["compare", "compare"]
    assert runs["compare_run"].to_dict() == {"a": "a", "b": "b"}
    assert pd.isna(runs.loc["a", "oracle_plan"]) and runs.loc["b", "oracle_plan"] == "large:0-10@cloud"
    (campaign / "compare.json").unlink()
    (campaign / "sweep.json").write_text(json.dumps(
        {"field": "topology.backhaul.bw_mbit", "values": [2, 50], "runs": ["b", "a"]}))
    runs = load_runs(campaign).runs.set_index("run_id")
    assert runs["sweep_field"].tolist() == ["topology.backhaul.bw_mbit"] * 2
    assert runs["topology.backhaul.bw_mbit"].to_dict() == {"a": 50, "b": 2}


def test_a_campaign_index_gives_every_frame_its_varied_fields_and_repetition(campaign):
    """campaign.json (emulation/campaign.py) names each run's grid fields, strategy and repetition:
    columns of the runs table and of every request's and message's row."""
    entry = {"fields": {"generation.steps": 10, "workload.labels": [1, 2]}, "strategy": None,
             "seeds": {"workload": 1, "topology": 1}, "status": "completed"}
    (campaign / "campaign.json").write_text(json.dumps({"grid": [], "runs": [
        {**entry, "name": "a", "run_dir": "a", "repetition": 0},
        {**entry, "name": "b", "run_dir": "b", "repetition": 1, "strategy": "elastic",
         "fields": {"generation.steps": 20, "workload.labels": [3]}}]}))
    tables = load_runs(campaign)
    runs = tables.runs.set_index("run_id")
    assert runs["campaign"].tolist() == ["campaign"] * 2 and runs["campaign_run"].tolist() == ["a", "b"]
    assert runs["generation.steps"].to_dict() == {"a": 10, "b": 20}
    assert runs["campaign_repetition"].to_dict() == {"a": 0, "b": 1}
    assert pd.isna(runs.loc["a", "campaign_strategy"]) and runs.loc["b", "campaign_strategy"] == "elastic"
    varied = ["generation.steps", "campaign_repetition"]
    for frame, ids in ((tables.requests, {"a", "b"}), (tables.traffic, {"b"})):  # only b has traffic
        per_run = frame.groupby("run_id")[varied].agg(set)
        assert set(per_run.index) == ids
        for run, row in per_run.iterrows():
            assert row.to_dict() == {column: {runs.loc[run, column]} for column in varied}
    assert set(tables.requests["workload.labels"]) == {"[1, 2]", "[3]"}  # a list: its JSON text
    assert set(tables.requests["repetition"]) == set(MEASURED["repetition"])  # the workload's own
    (campaign / "campaign.json").write_text(json.dumps({"runs": [{"name": "c", "run_dir": "c"}]}))
    assert "campaign_repetition" not in load_runs(campaign).runs.columns  # runs it does not list


def test_a_directory_without_runs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no run directory"):
        load_runs(tmp_path)


@pytest.mark.parametrize("name", ["summary.json", "manifest.json"])
def test_a_newer_schema_in_a_document_is_refused_in_one_line(tmp_path, name):
    d = tmp_path / "run"
    shutil.copytree(SMOKE_RUN, d)
    _edit_json(d / name, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ValueError) as caught:
        load_runs(d)
    message = str(caught.value)
    assert message == (f"{d / name}: schema version {SCHEMA_VERSION + 1} is newer than this edgestage "
                       f"reads ({SCHEMA_VERSION}); update edgestage to load it")
    assert "\n" not in message


def test_a_newer_schema_in_a_parquet_file_is_refused(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(SMOKE_RUN, d)
    table = pq.read_table(d / "requests.parquet")
    newer = {**table.schema.metadata, PARQUET_KEY: str(SCHEMA_VERSION + 1).encode()}
    pq.write_table(table.replace_schema_metadata(newer), d / "requests.parquet")
    with pytest.raises(ValueError, match=f"requests.parquet: schema version {SCHEMA_VERSION + 1} is newer"):
        load_run(d)


def test_written_parquet_files_carry_the_version_and_read_back_the_same(tmp_path):
    path = tmp_path / "requests.parquet"
    write_parquet(REQUESTS, path)
    assert pq.read_schema(path).metadata[PARQUET_KEY] == str(SCHEMA_VERSION).encode()
    pd.testing.assert_frame_equal(pd.read_parquet(path), REQUESTS)  # the dtypes too
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_a_version_1_traffic_file_keeps_message_bytes_on_data_rows_only(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(SMOKE_RUN, d)
    old = pd.DataFrame({"request_id": ["r0-q0000"] * 2, "part": ["data", "ack"], "wire_bytes": [600.0, 66.0],
                        "message_bytes": [500.0, 500.0], "zmtp_bytes": [520.0, 520.0]})
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), d / "traffic.parquet")  # no version
    traffic = load_run(d)["traffic"]
    assert traffic["message_bytes"].sum() == 500 and traffic["zmtp_bytes"].sum() == 520
    assert traffic.loc[traffic["part"] == "ack", "message_bytes"].isna().all()


def test_loading_imports_neither_torch_nor_diffusers_nor_mininet(campaign):
    code = ("import sys; from analysis.load import load_runs; "
            f"t = load_runs({str(campaign)!r}); print(len(t.requests)); "
            "print(sorted({'torch', 'diffusers', 'mininet', 'zmq', 'scapy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    warm_rows = int(REQUESTS["request_id"].eq(WARM).sum())
    assert out.splitlines() == [str(2 * len(MEASURED) - warm_rows), "[]"]


# ---- docs/results-columns.md lists every column the code writes --------------------------------

COLUMNS_DOC = Path(__file__).resolve().parents[2] / "docs" / "results-columns.md"


def documented(section: str) -> list[str]:
    """The first-cell names of the table under `## section` in docs/results-columns.md."""
    text = COLUMNS_DOC.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE)


def test_the_columns_document_lists_every_requests_column():
    from analysis.run_tables import REQUEST_COLUMNS

    assert documented("requests.parquet") == REQUEST_COLUMNS  # every one, in the file's order
    assert list(REQUESTS.columns) == REQUEST_COLUMNS


def test_the_columns_document_lists_every_traffic_column():
    from analysis.run_tables import TRAFFIC_COLUMNS

    assert documented("traffic.parquet") == TRAFFIC_COLUMNS


def test_the_columns_document_lists_every_summary_key():
    from analysis.pipeline import summary_document

    keys = summary_document({}, REQUESTS.iloc[:0], {}, {})
    assert documented("summary.json") == list(keys)
