"""report.html: the report of analysis/report.py as one self-contained page.

It is made from the very blocks report.md is made from (`report_blocks`), so it has the same
sections in the same order: text lines become headings and paragraphs, each table is its formatted
DataFrame (`Table.shown`) as an HTML table, and each figure's PNG is embedded as a
`data:image/png;base64` URI, so the page opens anywhere with nothing beside it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from analysis.outputs import Block, Figure, Table

_STYLE = """body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{padding:.2em .6em;border-bottom:1px solid #ccc;text-align:right}
th{border-bottom:2px solid #444}
img{max-width:100%}
code{background:#f3f3f3;padding:0 .2em}"""
# the Markdown the report's text uses: **strong**, *emphasis*, `code`
_INLINE = ((re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])"), r"<em>\1</em>"),
           (re.compile(r"`([^`]+)`"), r"<code>\1</code>"))


def report_html(blocks: list[Block], run_dir: Path) -> str:
    """The page; figures are read from `run_dir` (their paths are relative to it)."""
    body: list[str] = []
    paragraph: list[str] = []
    for block in [*blocks, ""]:  # the empty line ends a last paragraph
        ends_paragraph = not isinstance(block, str) or not block.strip() or block.startswith("#")
        if ends_paragraph and paragraph:
            body.append(f"<p>{inline(' '.join(paragraph))}</p>")
            paragraph = []
        if isinstance(block, Table):
            body.append(table_html(block))
        elif isinstance(block, Figure):
            body.append(figure_html(block, Path(run_dir)))
        elif block.startswith("#"):
            level = min(len(block) - len(block.lstrip("#")), 6)
            body.append(f"<h{level}>{inline(block[level:].strip())}</h{level}>")
        elif block.strip():
            paragraph.append(block.strip())
    title = next((b.lstrip("#").strip() for b in blocks if isinstance(b, str) and b.startswith("# ")), "run")
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>",
                      "<body>", *body, "</body>", "</html>", ""])


def inline(text: str) -> str:
    """A line of the report's Markdown as HTML: escaped, then its few inline marks."""
    out = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


def table_html(table: Table) -> str:
    return table.shown.to_html(index=False, border=0, escape=True, na_rep="-",
                               table_id=f"table-{table.name}")


def figure_html(figure: Figure, run_dir: Path) -> str:
    data = base64.b64encode((run_dir / figure.path).read_bytes()).decode("ascii")
    alt = html.escape(figure.title)
    return (f"<h2>{alt}</h2>\n<figure><img src=\"data:image/png;base64,{data}\" alt=\"{alt}\">"
            f"<figcaption>{html.escape(figure.path.as_posix())} (and its PDF twin)</figcaption></figure>")
