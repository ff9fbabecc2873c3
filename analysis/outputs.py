"""How the analysis writes what a paper takes: every figure as PNG and PDF, every table as CSV and
LaTeX (booktabs).

    save_figure(fig, run / "plots" / "latency_cdf.png")    # and plots/latency_cdf.pdf
    write_table(data, run / "tables", "per_strategy", shown)  # tables/per_strategy.csv and .tex

A table's CSV holds its values as measured (full precision, empty where missing), for a notebook;
its .tex holds them as the report shows them (`shown`, formatted), for a paper.  `Table`,
`Figure` and `Block` are what a report is made of (analysis/report.py builds them,
analysis/report_html.py and report.md render them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

DPI = 120
# no creation date in the PDF: the same run gives the same file
_PDF_METADATA = {"CreationDate": None}


@dataclass(frozen=True)
class Table:
    """One table of the report, in every form it is written in."""

    name: str  # tables/<name>.csv and .tex
    data: pd.DataFrame  # the values as measured, row labels in a column: the CSV
    shown: pd.DataFrame  # the same cells as the report shows them (strings): the .tex and the HTML
    markdown: str  # as report.md shows it


@dataclass(frozen=True)
class Figure:
    title: str
    path: Path  # the PNG, relative to the run directory


# report.md line by line: a line of Markdown text, a table or a figure (a section of its own)
Block = str | Table | Figure


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as `path` (PNG) and its PDF twin (same stem), close it; the PNG's path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=DPI)
    fig.savefig(path.with_suffix(".pdf"), metadata=_PDF_METADATA)
    plt.close(fig)
    return path.with_suffix(".png")


def write_table(data: pd.DataFrame, directory: Path, name: str,
                shown: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """<directory>/<name>.csv from `data` (no index: row labels belong in a column) and
    <directory>/<name>.tex from `shown` (default `data`); their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    csv, tex = directory / f"{name}.csv", directory / f"{name}.tex"
    data.to_csv(csv, index=False)
    tex.write_text(latex_table(data if shown is None else shown, numeric=_numeric_columns(data)))
    return csv, tex


def latex_table(frame: pd.DataFrame, numeric: set[str] | None = None) -> str:
    """A booktabs tabular of `frame` without its index, cells and headings escaped for LaTeX;
    columns in `numeric` (default: those of numeric dtype) right-aligned."""
    numeric = _numeric_columns(frame) if numeric is None else numeric
    align = "".join("r" if c in numeric else "l" for c in frame.columns)
    styler = frame.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, column_format=align)


def _numeric_columns(frame: pd.DataFrame) -> set[str]:
    return {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
