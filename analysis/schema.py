"""The version of a run directory's files, written by the end-of-run pipeline and checked by the
loader (analysis/load.py).

Every file the pipeline writes carries `SCHEMA_VERSION`: `summary.json`, `accuracy.json` and
`manifest.json` as a top-level `schema_version`, `requests.parquet` and `traffic.parquet` in their
Parquet key-value metadata under `edgestage.schema_version`.  A file without it was written
before versions existed and reads as version 1.  A reader refuses a version newer than the one it
knows; an older one it reads, upgrading what changed (analysis/load.py).

Versions:
  1: before versions were written.  traffic.parquet repeats a message's `message_bytes` and
     `zmtp_bytes` on its ack rows (and its data rows), so their sum counts a message twice.
  2: `schema_version` written; traffic.parquet gives `message_bytes` and `zmtp_bytes` on data rows
     only (docs/results-columns.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 2
PARQUET_KEY = b"edgestage.schema_version"
UNVERSIONED = 1  # what a file without a version is


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """`frame` to `path` with the schema version in its metadata, replaced whole (a reader never
    sees half a file).  pyarrow directly: pandas' `to_parquet` offers no key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), PARQUET_KEY: str(SCHEMA_VERSION).encode()}
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table.replace_schema_metadata(metadata), tmp)
    os.replace(tmp, path)


def parquet_version(path: Path) -> int:
    """The schema version a Parquet file was written with (1 if it says none); ValueError above
    what this code knows."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PARQUET_KEY)
    return check_version(int(raw) if raw is not None else UNVERSIONED, path)


def document_version(document: dict[str, Any], path: Path) -> int:
    """The schema version of a run's JSON document (1 if it says none); ValueError above what this
    code knows."""
    return check_version(int(document.get("schema_version") or UNVERSIONED), path)


def check_version(version: int, path: Path) -> int:
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {version} is newer than this edgestage reads "
                         f"({SCHEMA_VERSION}); update edgestage to load it")
    return version
