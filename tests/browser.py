"""A page as a real browser renders it: an HTML file opened in headless Chromium (Debian's chromium
and chromium-driver, driven by selenium), and what the tests check of it read back once the page
has loaded.

Parsing HTML says what a page holds; only a browser says whether its images decode, its tables
are laid out and its scripts run without errors, which is what a reader of report.html sees.  Where
chromium, chromedriver or selenium is missing the calling test is skipped, saying which.  Each call
is one browser session with a fresh profile, removed afterwards, and the browser is always quit:
nothing is left running or written behind.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LOAD_TIMEOUT_S = 30
SRC_PREFIX_CHARS = 40  # enough to tell a data: URI and its type; a figure's whole URI is ~100 kB

# Read in the page, once it has loaded: everything at once, so one round trip to the browser.
_READ_PAGE = """
const text = e => (e ? e.textContent.trim() : null);
return {
  images: Array.from(document.images, img => ({
    alt: img.getAttribute('alt'), src_prefix: (img.getAttribute('src') || '').slice(0, arguments[0]),
    natural_width: img.naturalWidth, natural_height: img.naturalHeight, complete: img.complete,
    caption: text(img.closest('figure') && img.closest('figure').querySelector('figcaption'))})),
  tables: Array.from(document.querySelectorAll('table'), t => ({
    id: t.id, rows: t.rows.length, columns: t.rows.length ? t.rows[0].cells.length : 0})),
  headings: Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6'), h => h.textContent.trim()),
};
"""


@dataclass(frozen=True)
class RenderedImage:
    """An <img> as the browser has it after loading the page."""

    alt: str | None
    src_prefix: str  # the first SRC_PREFIX_CHARS characters of its src attribute
    natural_width: int  # 0 when the image did not decode
    natural_height: int
    complete: bool  # the browser is done with it (loaded or failed: see `loaded`)
    caption: str | None  # its <figure>'s <figcaption>, if it is in one

    @property
    def loaded(self) -> bool:
        """Fetched and decoded: a broken image is also `complete`, but has no natural size."""
        return self.complete and self.natural_width > 0 and self.natural_height > 0


@dataclass(frozen=True)
class RenderedTable:
    """A <table>: its id and its size in rows (the header's included) and the first row's cells."""

    id: str
    rows: int
    columns: int


@dataclass(frozen=True)
class RenderedPage:
    """What the tests check of a loaded page."""

    title: str
    images: list[RenderedImage]
    tables: list[RenderedTable]
    headings: list[str]  # h1 to h6, in document order
    severe_logs: list[str]  # the browser console's SEVERE entries: script errors, failed loads

    @property
    def table_count(self) -> int:
        return len(self.tables)


def browser_missing() -> str | None:
    """Why no page can be rendered here, or None where it can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return (f"no headless browser: {path} is missing (Debian package {package}, "
                    "installed by `make system-packages` where the distribution has it)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no headless browser: selenium is not installed (pip install -e '.[dev]')"
    return None


def render_report(html_path: str | Path) -> RenderedPage:
    """Open the HTML file in headless Chromium, wait for it to load and read it back; the calling
    test is skipped where no browser is installed."""
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="edgestage-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # named, so selenium never looks for (or fetches) one
    # --no-sandbox: Chromium refuses to start as root with its sandbox, and the tests run as root
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, read below
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(LOAD_TIMEOUT_S)
        driver.get(Path(html_path).resolve().as_uri())
        WebDriverWait(driver, LOAD_TIMEOUT_S).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        read = driver.execute_script(_READ_PAGE, SRC_PREFIX_CHARS)
        return RenderedPage(
            title=driver.title,
            images=[RenderedImage(**image) for image in read["images"]],
            tables=[RenderedTable(**table) for table in read["tables"]],
            headings=read["headings"],
            severe_logs=[entry["message"] for entry in driver.get_log("browser")
                         if entry.get("level") == "SEVERE"])
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
