"""report.html as a reader sees it, in a real headless browser (tests/browser.py): on a copy of the
real smoke run (tests/data/smoke-run), every figure the report drew is an image the browser loaded
from the page itself, every table of tables/ is laid out, and the console has no errors.  A page
with a broken image and a script error shows the checks can fail.

test_report_outputs.py checks what report.html holds, byte for byte, by parsing it; this checks
that a browser makes of it what the report means.  The figures expected are read from plots/, not
listed here, so a figure added or replaced changes nothing in this test.  Skipped, saying why,
where chromium or chromium-driver is not installed.
"""

from __future__ import annotations

import base64
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd

from analysis.report import write_report
from tests.browser import render_report

from .conftest import SMOKE_RUN


def png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height in pixels, from its IHDR chunk (always the first, at byte 16)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", path
    return struct.unpack(">II", header[16:24])


def test_report_html_renders_every_figure_and_table(tmp_path):
    run = tmp_path / "smoke-run"
    shutil.copytree(SMOKE_RUN, run)
    write_report(run)
    page = render_report(run / "report.html")

    pngs = sorted((run / "plots").glob("*.png"))
    assert pngs, "the smoke run's report drew no figure"
    # each figure's <figure> is captioned with its path (analysis/report_html.py): that ties an
    # image on the page to its file
    shown = {image.caption.split()[0]: image for image in page.images if image.caption}
    assert len(page.images) == len(pngs) == len(shown)
    for png in pngs:
        image = shown[png.relative_to(run).as_posix()]
        assert image.loaded, f"{png.name} did not load in the browser: {image}"
        assert image.src_prefix.startswith("data:image/png;base64,"), png.name  # self-contained
        assert (image.natural_width, image.natural_height) == png_size(png), png.name
        assert image.alt

    csvs = sorted((run / "tables").glob("*.csv"))
    assert csvs, "the smoke run's report wrote no table"
    tables = {table.id: table for table in page.tables}
    assert page.table_count == len(csvs) == len(tables)
    for csv in csvs:
        table = tables[f"table-{csv.stem}"]
        assert table.rows == len(pd.read_csv(csv)) + 1, csv.name  # its rows and the header's

    assert page.severe_logs == []
    assert page.headings and page.title == page.headings[0]


def test_a_broken_image_and_a_script_error_are_seen(tmp_path):
    """The checks above can fail: a data URI that is no PNG loads as nothing, and an error on the
    console is read back, beside an image that does load."""
    good = base64.b64encode(tiny_png()).decode("ascii")
    broken = base64.b64encode(tiny_png()[:30]).decode("ascii")  # cut inside its IHDR chunk
    page_file = tmp_path / "broken.html"
    page_file.write_text(f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>broken</title>
</head><body><h1>broken</h1>
<figure><img src="data:image/png;base64,{good}" alt="good"><figcaption>good.png</figcaption></figure>
<figure><img src="data:image/png;base64,{broken}" alt="broken"><figcaption>broken.png</figcaption></figure>
<script>console.error("deliberate error");</script>
</body></html>""")
    page = render_report(page_file)
    good_image, broken_image = page.images
    assert good_image.loaded and (good_image.natural_width, good_image.natural_height) == (1, 1)
    assert broken_image.complete and broken_image.natural_width == 0 and not broken_image.loaded
    assert broken_image.src_prefix.startswith("data:image/png;base64,")
    assert any("deliberate error" in message for message in page.severe_logs), page.severe_logs
    assert page.title == "broken" and page.table_count == 0


def tiny_png() -> bytes:
    """A valid 1x1 PNG (one white pixel), made here so the negative check needs no file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff"))
            + chunk(b"IEND", b""))
