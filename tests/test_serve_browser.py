"""``capstore serve`` in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
which ``.ci/run`` installs) driven by Selenium, on the demo's store.

It loads the runs page, follows the MILS run to one of its items, checks that the image is drawn
(``naturalWidth > 0``) and that the trajectory table has the run's iterations of that item, then
types a query into the SQL box and runs it with Ctrl+Enter. Screenshots of each page are saved
under the test's tmp folder. Skipped, saying why, only where no Chromium is installed.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import func, select

from capstore.analysis.duckdb_store import open_for_reading
from capstore.serve.app import make_app
from capstore.serve.server import bind
from capstore.store.schema import IterationState, Run
from tests.demo_run import first_demo

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# As root Chromium needs no sandbox; the network switches keep it from calling home on a closed network.
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000")


def chromium_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists() and not shutil.which(Path(p).name)]
    if missing:
        pytest.skip(f"no Chromium here ({', '.join(missing)} missing): apt-get install chromium chromium-driver "
                    "(.ci/run installs them)")
    pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    """The demo store served by uvicorn on a free loopback port: (base URL, store)."""
    import uvicorn

    chromium_or_skip()
    store = open_for_reading(str(first_demo().db))
    sock = bind("127.0.0.1", 0)
    app = make_app(store, thumbnails=tmp_path_factory.mktemp("thumbs"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", store
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        store.dispose()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    # The system's chromedriver, never Selenium's driver manager (which would download one).
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_runs_to_run_to_item_then_sql_in_chromium(served, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, store = served
    wait = WebDriverWait(browser, 30)
    with store.read() as s:
        mils = s.scalar(select(Run.id).where(Run.method == "mils").order_by(Run.id).limit(1))
        runs = s.scalar(select(func.count()).select_from(Run))

    browser.get(f"{base}/runs")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
    assert len(rows) == runs
    browser.save_screenshot(str(tmp_path / "1-runs.png"))

    browser.find_element(By.CSS_SELECTOR, f'#runs-table tr[data-run="{mils}"] a.run-link').click()
    wait.until(ec.url_to_be(f"{base}/runs/{mils}"))
    first_cell = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#grid li a.item-link")))
    thumb = first_cell.find_element(By.TAG_NAME, "img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb))
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart")  # the iteration curve, drawn server-side
    browser.save_screenshot(str(tmp_path / "2-run.png"))

    first_cell.click()
    image = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".item-top img.full")))
    width = wait.until(lambda d: d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", image))
    assert width > 0
    table = browser.find_element(By.ID, "trajectory")
    item_id = int(browser.current_url.split("/items/")[1].split("?")[0])
    shown = [int(r.get_attribute("data-iteration")) for r in table.find_elements(By.CSS_SELECTOR, "tr.step")]
    with store.read() as s:
        expected = list(s.scalars(select(IterationState.iteration).where(
            IterationState.run_id == mils, IterationState.item_id == item_id).order_by(IterationState.iteration)))
    assert shown == expected and len(expected) >= 2
    browser.save_screenshot(str(tmp_path / "3-item.png"))

    browser.find_element(By.LINK_TEXT, "SQL").click()
    box = wait.until(ec.presence_of_element_located((By.ID, "sql-box")))
    box.send_keys("SELECT run_id, run_name, status FROM runs ORDER BY run_id")
    box.send_keys(Keys.CONTROL, Keys.ENTER)  # the page's few lines of JavaScript submit the form
    result = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#sql-result tbody")))
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in result.find_elements(By.TAG_NAME, "tr")]
    assert len(cells) == runs and cells[0][0] == "1" and all(row[2] == "done" for row in cells)
    browser.save_screenshot(str(tmp_path / "4-sql.png"))
    assert all((tmp_path / name).stat().st_size > 10_000
               for name in ("1-runs.png", "2-run.png", "3-item.png", "4-sql.png"))


def test_the_demo_ends_by_suggesting_capstore_serve() -> None:
    last = first_demo().output.strip().splitlines()[-1]
    assert last.startswith(f"next: capstore --db {first_demo().db} serve --open"), last
