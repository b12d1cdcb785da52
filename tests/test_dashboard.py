"""The tier dashboard (orchestration/dashboard.py): built from a graded warehouse, drawn
by a real browser, and from warehouses with and without the service desk marts."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from orchestration.dashboard import build_dashboard, main
from tests.conftest import OCTOBER, query

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: The sections with a chart whatever the book; the managers' one needs a managers file,
#: which the graded test book has not.
CHART_SECTIONS = ("tiers-over-time", "migrations", "profiles", "at-risk")


@pytest.fixture(scope="module")
def dashboard(graded, tmp_path_factory) -> Path:
    warehouse, _ = graded
    return build_dashboard(warehouse, tmp_path_factory.mktemp("dashboard"))


def sections(page: str) -> dict[str, str]:
    """Each ``<section>``'s HTML by its id."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, flags=re.S))


def test_dashboard_of_a_graded_warehouse(graded, dashboard):
    warehouse, _ = graded
    page = dashboard.read_text(encoding="utf-8")
    [(run_id,)] = query(warehouse, "select run_id from audit.publication")
    assert dashboard.name == f"tiers-{run_id}.html"
    assert (dashboard.parent / "latest.html").read_bytes() == dashboard.read_bytes()

    parts = sections(page)
    for anchor in CHART_SECTIONS:
        assert parts[anchor].count("<svg") == 1, anchor
    assert "<svg" not in parts["manager-books"]
    assert "No manager is listed" in parts["manager-books"]
    assert page.count("<svg") == len(CHART_SECTIONS)
    assert f"<title>Customer tiers as of {OCTOBER}</title>" in page
    assert str(warehouse) in page and run_id in page

    # self-contained: nothing fetched from anywhere, so it opens offline and mailed
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script|<img|<iframe|<object|@import", page, flags=re.I)
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references and all(ref.startswith(("#", "data:")) for ref in references)
    assert not re.search(r"url\((?!#)", page)
    # each chart's ids are its own: inline SVGs share the page's
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_dashboard_renders_in_chromium(dashboard):
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = (
            f"{' and '.join(missing)} not found: install Debian's browser and its driver "
            "with `apt-get install chromium chromium-driver`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI must run the browser test, not pass without it
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get(dashboard.as_uri())
        assert driver.title == f"Customer tiers as of {OCTOBER}"
        sizes = driver.execute_script(
            "return [...document.querySelectorAll('svg')].map(svg => {"
            "const box = svg.getBoundingClientRect(); return [box.width, box.height]; });"
        )
        assert len(sizes) == len(CHART_SECTIONS)
        assert all(width > 0 and height > 0 for width, height in sizes), sizes
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
    finally:
        driver.quit()


def test_dashboard_with_listed_managers(graded, tmp_path):
    """A book with a managers file: the busiest managers' chart and the load counts."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded[0], warehouse)
    # as if every manager were listed with 4 hours a month: some over, some within
    with duckdb.connect(str(warehouse)) as con:
        con.execute("""
            update marts.manager_books
            set is_listed = true, capacity_hours_per_month = 4,
                capacity_used_share = required_hours_per_month / 4,
                load_status = case when required_hours_per_month > 4 then 'over'
                                   when required_hours_per_month < 2 then 'under'
                                   else 'within' end
            where not is_unassigned""")
        [(busiest,)] = con.execute(
            """select manager_id from marts.manager_books where as_of_date = ?
               order by capacity_used_share desc nulls last, manager_id limit 1""",
            [OCTOBER],
        ).fetchall()
    books = sections(build_dashboard(warehouse, tmp_path / "out").read_text(encoding="utf-8"))[
        "manager-books"
    ]
    assert books.count("<svg") == 1
    assert "No manager is listed" not in books
    assert f"{busiest} (" in books  # the busiest manager is the chart's top bar
    assert "<td>over</td>" in books and "<td>unassigned</td>" in books


def test_dashboard_of_a_warehouse_before_the_service_desk_marts(graded, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(graded[0], warehouse)
    # and before audit.publication: the run is named by the file's time
    with duckdb.connect(str(warehouse)) as con:
        for table in ("marts.manager_books", "marts.customers_at_risk", "audit.publication"):
            con.execute(f"drop table {table}")
    modified = dt.datetime.fromtimestamp(warehouse.stat().st_mtime, tz=dt.UTC)

    path = build_dashboard(warehouse, tmp_path / "out")
    assert path.name == f"tiers-{modified:%Y%m%dT%H%M%SZ}.html"
    parts = sections(path.read_text(encoding="utf-8"))
    assert "This warehouse has no marts.manager_books" in parts["manager-books"]
    assert "This warehouse has no marts.customers_at_risk" in parts["at-risk"]
    assert all("<svg" not in parts[anchor] for anchor in ("manager-books", "at-risk"))
    assert all(parts[anchor].count("<svg") == 1 for anchor in CHART_SECTIONS[:3])


def test_cli(graded, tmp_path, capsys):
    assert main(["--warehouse", str(tmp_path / "none.duckdb")]) == 2
    assert "No warehouse at" in capsys.readouterr().err
    assert main(["--warehouse", str(graded[0]), "--out", str(tmp_path)]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written.parent == tmp_path and written.is_file()
    assert (tmp_path / "latest.html").is_file()
