"""How fast ``capstore serve`` answers on a full-size store: every page, warm, over real HTTP.

Usage::

    .venv/bin/python benchmarks/big_store.py --db /tmp/big/store.db          # once: 5,000 × 10 × 50
    .venv/bin/python benchmarks/serve_pages.py --db /tmp/big/store.db --json out.json

The viewer (``capstore.serve.make_app``) is served by uvicorn on a loopback port in this process and
each page is fetched with ``http.client`` over one kept-alive connection: the first fetch of a page
is its **first view** (after the server started: the analysis connection opened, the shipped
queries computed), then ``--repeat`` fetches give the **warm** median and slowest. Then the same
pages again with the shipped-query memo off (``make_app(memo=False)``): what a page costs right
after the store changed (a worker committed), when every aggregate query runs again. The pages:
runs; the MILS run (first grid page, a page deep in the grid sorted best-first); a baseline run;
items of the MILS run (image, references, every run's caption, the trajectory of 10 iterations ×
50 candidates); a comparison of MILS with a baseline (first page, a deep page); the SQL page with a
shipped query and with an ad-hoc query.

Media: the big store's items have no image files, so images and thumbnails are timed on a small
store of the shared COCO images (``../shared/data/coco-karpathy-test/images``, a folder import):
the first thumbnail of each image (decode, resize, JPEG, write) and the same thumbnail again.
Numbers and the machine: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from sqlalchemy import select  # noqa: E402

from bench_common import machine, shared_dir  # noqa: E402
from capstore.analysis.duckdb_store import open_for_reading  # noqa: E402
from capstore.serve.app import make_app  # noqa: E402
from capstore.serve.server import bind  # noqa: E402
from capstore.store.schema import Item, Run  # noqa: E402

LIMIT_MS = 300.0


class Served:
    """An app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def fetch(self, url: str) -> tuple[float, int, int]:
        """(milliseconds, status, bytes) of one GET, body read."""
        started = time.perf_counter()
        self.http.request("GET", url)
        answer = self.http.getresponse()
        body = answer.read()
        return 1000 * (time.perf_counter() - started), answer.status, len(body)

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()


def page_urls(store: Any) -> dict[str, str]:
    with store.read() as s:
        runs = {r.method: r.id for r in s.scalars(select(Run).order_by(Run.id))}
        items = list(s.scalars(select(Item.id).order_by(Item.id)))
    mils = runs["mils"]
    baseline = next(rid for method, rid in runs.items() if method != "mils")
    picks = [items[0], items[len(items) // 2], items[-1]]
    urls = {"runs": "/runs",
            "run (MILS), grid page 1": f"/runs/{mils}",
            "run (MILS), grid page 60, best first": f"/runs/{mils}?sort=CIDEr&order=best&page=60",
            "run (baseline)": f"/runs/{baseline}"}
    for k, item in enumerate(picks):
        urls[f"item {k + 1} (MILS trajectory)"] = f"/items/{item}?run={mils}"
    urls.update({"compare MILS vs baseline, page 1": f"/compare?runs={mils},{baseline}",
                 "compare, page 100, best first": f"/compare?runs={mils},{baseline}&order=best&page=100",
                 "sql: metrics_by_run": "/sql?query=metrics_by_run",
                 "sql: one item's candidates": f"/sql?q=SELECT+iteration,+text,+score+FROM+candidates+WHERE+run_id={mils}"
                                               f"+AND+item_id={picks[1]}+ORDER+BY+iteration,+rank",
                 "runs.json (progress poll)": "/runs.json"})
    return urls


def time_pages(store: Any, urls: dict[str, str], repeat: int, memo: bool, thumbs: Path) -> dict[str, dict[str, float]]:
    served = Served(make_app(store, thumbnails=thumbs, memo=memo))
    out: dict[str, dict[str, float]] = {}
    try:
        for name, url in urls.items():
            first, status, size = served.fetch(url)
            if status != 200:
                raise SystemExit(f"{url}: HTTP {status}")
            warm = [served.fetch(url)[0] for _ in range(repeat)]
            out[name] = {"first_ms": first, "median_ms": statistics.median(warm), "max_ms": max(warm), "bytes": size}
            print(f"  {name:<42} first {first:8.1f} ms   warm median {out[name]['median_ms']:7.1f} ms   "
                  f"max {out[name]['max_ms']:7.1f} ms   {size / 1024:7.1f} KiB", flush=True)
    finally:
        served.close()
    return out


def time_media(repeat: int) -> dict[str, float]:
    """Images and thumbnails of the shared COCO images, in a small store of their own."""
    from click.testing import CliRunner

    from capstore.cli.main import cli

    folder = shared_dir() / "data/coco-karpathy-test/images"
    if not folder.is_dir():
        print(f"  media: skipped ({folder} not found)")
        return {}
    work = Path(tempfile.mkdtemp(prefix="serve-bench-media-"))
    db = str(work / "media.db")
    result = CliRunner().invoke(cli, ["--db", db, "dataset", "add", "coco-sample", "--images", str(folder)])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    store = open_for_reading(db)
    with store.read() as s:
        shas = [sha for sha in s.scalars(select(Item.image_sha).order_by(Item.id)) if sha]
    served = Served(make_app(store, thumbnails=work / "thumbs"))
    try:
        first_thumb = [served.fetch(f"/thumbs/{sha}")[0] for sha in shas]
        warm_thumb = [served.fetch(f"/thumbs/{sha}")[0] for sha in shas for _ in range(repeat)]
        image = [served.fetch(f"/media/{sha}")[0] for sha in shas for _ in range(repeat)]
    finally:
        served.close()
        store.dispose()
    out = {"images": len(shas), "thumbnail_first_median_ms": statistics.median(first_thumb),
           "thumbnail_warm_median_ms": statistics.median(warm_thumb), "image_median_ms": statistics.median(image)}
    print(f"  media ({len(shas)} COCO JPEGs): first thumbnail median {out['thumbnail_first_median_ms']:.1f} ms, "
          f"thumbnail again {out['thumbnail_warm_median_ms']:.1f} ms, full image {out['image_median_ms']:.1f} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a store built by benchmarks/big_store.py")
    parser.add_argument("--repeat", type=int, default=15, help="warm fetches per page (default 15)")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()

    store = open_for_reading(args.db)
    thumbs = Path(tempfile.mkdtemp(prefix="serve-bench-thumbs-"))
    urls = page_urls(store)
    report: dict[str, Any] = {"machine": machine(), "db": store.display_url, "repeat": args.repeat}
    try:
        print("pages, memo on (the server as it runs):", flush=True)
        report["pages"] = time_pages(store, urls, args.repeat, True, thumbs)
        print("pages, memo off (every shipped query recomputed: the store just changed):", flush=True)
        report["pages_no_memo"] = time_pages(store, urls, args.repeat, False, thumbs)
    finally:
        store.dispose()
    report["media"] = time_media(args.repeat)
    slow = [n for n, v in report["pages"].items() if v["median_ms"] >= LIMIT_MS]
    print(f"every page under {LIMIT_MS:.0f} ms (median, warm): {'yes' if not slow else 'no: ' + ', '.join(slow)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
