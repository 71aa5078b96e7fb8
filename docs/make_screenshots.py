"""Regenerate the README's two screenshots of ``capstore serve`` (``docs/serve-run.png``, ``docs/serve-item.png``).

Usage::

    .venv/bin/python docs/make_screenshots.py                      # runs the demo in a temp folder first
    .venv/bin/python docs/make_screenshots.py --db capstore.db     # or a store the demo already filled

The demo store is served on a loopback port and shot with headless Chromium (Debian's ``chromium``
and ``chromium-driver``, driven by Selenium; the flags the tests use): the MILS run's page (facts,
metrics, cost, the iteration curves, quality vs cost, the first rows of the grid) and one of its
items (the image, every run's caption, the trajectory). Each PNG is cut to the top of the page and
reduced to a 256-colour palette, so the files stay small.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from capstore.analysis.duckdb_store import open_for_reading  # noqa: E402
from capstore.serve.app import make_app  # noqa: E402
from capstore.serve.server import bind  # noqa: E402
from capstore.store.schema import Caption, Run  # noqa: E402

WIDTH = 1280
SHOTS = {"serve-run.png": 1250, "serve-item.png": 1400}  # file -> height kept (pixels from the top)
ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")


def demo_store(db: str | None) -> str:
    if db:
        return db
    from click.testing import CliRunner

    from capstore.cli.main import cli

    work = Path(tempfile.mkdtemp(prefix="capstore-shots-"))
    store = str(work / "demo.db")
    result = CliRunner().invoke(cli, ["--db", store, "demo", "--workdir", str(work / "work"), "--quiet"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return store


def shoot(base: str, url: str, out: Path, keep: int, open_details: str | None = None) -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ARGS + (f"--window-size={WIDTH},{keep + 300}",):  # the window's frame takes some of it
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    try:
        driver.get(base + url)
        if open_details:  # e.g. one iteration's kept and tried candidates
            driver.execute_script("document.querySelector(arguments[0]).open = true", open_details)
        time.sleep(1.0)  # the lazy thumbnails in view load
        raw = out.with_suffix(".raw.png")
        driver.save_screenshot(str(raw))
    finally:
        driver.quit()
    with Image.open(raw) as image:
        image.crop((0, 0, WIDTH, min(keep, image.height))).convert("RGB").quantize(256).save(out, optimize=True)
    raw.unlink()
    print(f"{out} ({out.stat().st_size // 1024} KiB)")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a store the demo filled (default: run the demo in a temp folder)")
    parser.add_argument("--out", default=str(REPO / "docs"), help="where the PNGs go (default docs/)")
    args = parser.parse_args()
    store = open_for_reading(demo_store(args.db))
    with store.read() as s:
        mils = s.scalar(select(Run.id).where(Run.method == "mils").order_by(Run.id).limit(1))
        item = s.scalar(select(Caption.item_id).where(Caption.run_id == mils).order_by(Caption.item_id).limit(1))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(make_app(store, thumbnails=Path(tempfile.mkdtemp())), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        out = Path(args.out)
        shoot(base, f"/runs/{mils}", out / "serve-run.png", SHOTS["serve-run.png"])
        shoot(base, f"/items/{item}?run={mils}", out / "serve-item.png", SHOTS["serve-item.png"],
              open_details='#trajectory tr.step[data-iteration="1"] + tr details')
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        store.dispose()


if __name__ == "__main__":
    main()
