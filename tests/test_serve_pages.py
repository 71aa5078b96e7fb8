"""``capstore serve``'s pages through Starlette's test client, on SQLite and PostgreSQL.

Each page is read from a store with known numbers (``tests/serve_helpers.py``) and checked against
them: runs with their metrics and cost, a run's grid in worst/best order and paged, an item's
captions and MILS trajectory, a comparison's deltas, the SQL box (the same checks and limits as
``capstore sql``), media by sha with their caching headers, thumbnails made once; then every kind of
bad URL is a 404 page, and nothing read changes the store.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
from pathlib import Path
from urllib.parse import quote
from typing import Iterator

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import MetaData, select, text

from capstore.cli.main import cli
from capstore.serve import pages
from capstore.serve.app import make_app
from capstore.store import open_store
from capstore.store.images import read_image
from capstore.store.schema import Candidate, Caption
from starlette.testclient import TestClient
from tests.conftest import make_pg_url
from tests.test_analysis_fixtures import analysis_store  # noqa: F401  (the shared store of real runs)
from tests.serve_helpers import ITERATIONS, KEEP, ServeStore, build_serve_store, mils_text

BASE = "http://127.0.0.1"  # the app answers only requests addressed to a loopback name
_BUILT: dict[str, ServeStore] = {}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def serve_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ServeStore:
    """The known store on each database, built once per session and only read by the tests."""
    kind = request.param
    if kind not in _BUILT:
        if kind == "sqlite":
            db = str(tmp_path_factory.mktemp("serve-sqlite") / "store.db")
        else:
            urls = make_pg_url()  # skips when the server is not there
            db = next(urls)
            request.config.add_cleanup(lambda: [None for _ in urls])  # resuming it drops the schema
        store = open_store(db)
        _BUILT[kind] = build_serve_store(store, db)
        request.config.add_cleanup(store.dispose)
    return _BUILT[kind]


@pytest.fixture
def client(serve_store: ServeStore, tmp_path: Path) -> Iterator[TestClient]:
    app = make_app(serve_store.store, thumbnails=tmp_path / "thumbs")
    with TestClient(app, base_url=BASE) as c:
        yield c


def get(client: TestClient, url: str, status: int = 200) -> str:
    answer = client.get(url)
    assert answer.status_code == status, (url, answer.status_code, answer.text[:2000])
    assert "Traceback" not in answer.text
    return answer.text


def cells(page: str, table_id: str) -> list[list[str]]:
    """The text of each body row's cells of table ``table_id``."""
    table = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', page, re.S)
    assert table, f"no table {table_id}"
    return [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), re.S)]


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def grid_items(page: str) -> list[int]:
    grid = re.search(r'<ul class="grid" id="grid">(.*?)</ul>', page, re.S)
    assert grid
    return [int(i) for i in re.findall(r'href="/items/(\d+)[^"]*" class="item-link"', grid.group(1))]


# -- Runs -----------------------------------------------------------------------------------------


def test_runs_page_lists_runs_with_status_progress_metrics_and_cost(client: TestClient, serve_store: ServeStore) -> None:
    page = get(client, "/runs")
    rows = {int(r[1]): r for r in cells(page, "runs-table")}
    assert set(rows) == {serve_store.mils, serve_store.baseline}
    mils, base = rows[serve_store.mils], rows[serve_store.baseline]
    assert mils[2] == "serve-mils" and mils[3].startswith("mils") and mils[5] == "done"
    assert "6/6" in mils[6] and base[5] == "failed" and "5/6" in base[6] and "1 failed" in base[6]
    # metrics_by_run: BLEU-4, METEOR, ROUGE-L, CIDEr, SPICE, CLIPScore, dollars, device-hours
    assert mils[7:13] == ["0.300", "–", "–", "0.900", "–", "0.700"]
    assert base[10] == "0.500"
    a10g = 0.65 / (31 / 60)  # the seeded NVIDIA A10G rate, $ per hour
    assert mils[13] == f"${3 * 600 / 3600 * a10g:.4f}" and base[13] == f"${60 / 3600 * a10g:.4f}"
    assert 'href="/runs/%d"' % serve_store.mils in page and 'name="runs" value="%d"' % serve_store.baseline in page


def test_runs_page_sorts_by_any_column(client: TestClient, serve_store: ServeStore) -> None:
    def order(url: str) -> list[int]:
        return [int(r[1]) for r in cells(get(client, url), "runs-table")]

    assert order("/runs?sort=cider&dir=desc") == [serve_store.mils, serve_store.baseline]
    assert order("/runs?sort=cider&dir=asc") == [serve_store.baseline, serve_store.mils]
    assert order("/runs?sort=dollars&dir=asc") == [serve_store.baseline, serve_store.mils]
    assert order("/runs?sort=no_such_column") == sorted([serve_store.mils, serve_store.baseline])


# -- Run ------------------------------------------------------------------------------------------


def test_run_page_shows_config_metrics_cost_curve_and_errors(client: TestClient, serve_store: ServeStore) -> None:
    page = get(client, f"/runs/{serve_store.mils}")
    assert "serve-mils" in page and '"keep": 3' in html.unescape(page)  # the stored configuration
    assert re.search(r'<li data-metric="CIDEr" title="serve-test-1">CIDEr <strong>0.9000</strong>', page)
    stages = cells(page, "cost-by-stage")
    assert [r[0] for r in stages] == ["generate"] and "NVIDIA A10G" in stages[0][2]
    curve = cells(page, "iteration-curve")
    assert [int(r[0]) for r in curve] == list(range(ITERATIONS)) and all(int(r[1]) == 6 for r in curve)
    assert page.count('<svg class="chart"') == 2  # the score curve, quality vs cost (no candidate metric here)
    assert "it. 0: 6" in page and "it. 2: 6" in page  # steps per iteration, from capstore.runs.status
    errors = get(client, f"/runs/{serve_store.baseline}")
    kinds = cells(errors, "errors")
    assert kinds[0][:4] == ["caption", "http_500", "1", "1"] and "the upstream server said no" in kinds[0][4]


def test_run_grid_sorts_worst_or_best_and_pages(client: TestClient, serve_store: ServeStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    by_cider = sorted(serve_store.cider[serve_store.baseline], key=lambda i: serve_store.cider[serve_store.baseline][i])
    page = get(client, f"/runs/{serve_store.baseline}")  # default: CIDEr, worst first; the failed item last
    assert grid_items(page) == by_cider + [serve_store.failed_item]
    assert "http_500" not in page.split('id="grid"')[1] and "failed, no caption" in page
    best = get(client, f"/runs/{serve_store.baseline}?sort=CIDEr&order=best")
    assert grid_items(best) == by_cider[::-1] + [serve_store.failed_item]
    for item in serve_store.captions[serve_store.baseline]:
        assert f'src="/thumbs/{serve_store.shas[item]}"' in page
    monkeypatch.setattr(pages, "GRID_PAGE", 4)
    first = get(client, f"/runs/{serve_store.baseline}?sort=CIDEr&order=worst&page=1")
    second = get(client, f"/runs/{serve_store.baseline}?sort=CIDEr&order=worst&page=2")
    assert grid_items(first) + grid_items(second) == by_cider + [serve_store.failed_item]
    assert "page 2 of 2" in second
    get(client, f"/runs/{serve_store.baseline}?page=3", 404)


# -- Item -----------------------------------------------------------------------------------------


def test_item_page_shows_image_references_every_caption_and_the_trajectory(client: TestClient,
                                                                           serve_store: ServeStore) -> None:
    s = serve_store
    item = s.items[1]  # an even id: its caption entered at iteration 1
    page = get(client, f"/items/{item}")
    assert f'src="/media/{s.shas[item]}"' in page
    assert len(re.findall(r"<li>", page.split('id="references"')[1].split("</ol>")[0])) == 5
    captions = {r[0].split()[0]: r for r in cells(page, "captions")}
    assert captions["serve-mils"][1] == s.captions[s.mils][item]
    assert captions["serve-blip2"][1] == s.captions[s.baseline][item]
    assert f"{s.cider[s.mils][item]:.3f}" in captions["serve-mils"] and \
        f"{s.cider[s.baseline][item]:.3f}" in captions["serve-blip2"]
    steps = re.findall(r'<tr class="step" data-iteration="(\d+)">', page)
    assert steps == [str(i) for i in range(ITERATIONS)]
    assert f'id="caption-origin" data-iteration="{s.caption_iteration[item]}" data-origin="generated"' in page
    trajectory = page.split('id="trajectory"')[1]
    kept_lists = re.findall(r'<ol class="kept">(.*?)</ol>', trajectory, re.S)
    assert len(kept_lists) == ITERATIONS and all(len(re.findall(r"<li", k)) == KEEP for k in kept_lists)
    assert "★" in kept_lists[-1] and mils_text(item, 1, 3 - 1) in trajectory  # what iteration 1 tried
    assert _text(kept_lists[1]).count("new") == KEEP  # iteration 1's three candidates beat the pool's
    odd = get(client, f"/items/{s.items[0]}")  # its caption is a pool line, kept from iteration 0
    assert 'id="caption-origin" data-iteration="0" data-origin="pool"' in odd


def test_item_page_of_a_run_that_is_not_mils_has_no_trajectory_choice(client: TestClient,
                                                                      serve_store: ServeStore) -> None:
    get(client, f"/items/{serve_store.items[0]}?run={serve_store.baseline}", 404)
    page = get(client, f"/items/{serve_store.items[0]}?run={serve_store.mils}")
    assert 'id="trajectory"' in page


# -- Compare --------------------------------------------------------------------------------------


def test_compare_sorts_items_by_delta_with_both_captions(client: TestClient, serve_store: ServeStore) -> None:
    s = serve_store
    page = get(client, f"/compare?runs={s.mils},{s.baseline}")
    both = [i for i in s.items if i in s.cider[s.baseline]]
    deltas = {i: s.cider[s.baseline][i] - s.cider[s.mils][i] for i in both}
    rows = cells(page, "compare-items")
    shown = [int(i) for i in re.findall(r'<tr data-item="(\d+)">', page)]
    assert shown == sorted(both, key=lambda i: deltas[i]) + [s.failed_item]
    assert [r[-1] for r in rows[:len(both)]] == [f"{deltas[i]:+.3f}" for i in shown[:len(both)]]
    assert s.captions[s.mils][shown[0]] in rows[0][1] and s.captions[s.baseline][shown[0]] in rows[0][2]
    summary = _text(page.split('id="compare-summary">')[1].split("</p>")[0]).replace(" ,", ",")
    better = sum(1 for d in deltas.values() if d > 1e-12)
    worse = sum(1 for d in deltas.values() if d < -1e-12)
    assert f"better on {better}, worse on {worse}" in summary
    best_first = get(client, f"/compare?runs={s.mils},{s.baseline}&order=best&metric=CIDEr")
    first = re.search(r'<tr data-item="(\d+)">', best_first).group(1)
    assert int(first) == max(both, key=lambda i: deltas[i])


# -- SQL ------------------------------------------------------------------------------------------


def test_sql_box_runs_a_select_and_a_shipped_query_with_parameters(client: TestClient, serve_store: ServeStore) -> None:
    page = get(client, "/sql?q=SELECT+run_id,+method+FROM+runs+ORDER+BY+run_id")
    assert cells(page, "sql-result") == [[str(serve_store.mils), "mils"], [str(serve_store.baseline), "blip2"]]
    assert "(2 rows)" in page
    shipped = get(client, f"/sql?query=cost_by_stage&p_runs={serve_store.baseline}")
    assert "-- Where a run&#39;s cost goes" in shipped  # the query's text fills the box
    assert [r[:2] for r in cells(shipped, "sql-result")] == [[str(serve_store.baseline), "caption"]]
    hostile = get(client, "/sql?q=" + quote("SELECT '<script>alert(1)</script>' AS \"<b>x</b>\""))
    assert "<script>alert" not in hostile and "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile
    assert "<b>x</b>" not in hostile  # values and column names are text, never markup
    listing = get(client, "/sql")
    assert 'href="/sql?query=metrics_by_run"' in listing and 'href="/sql?query=iteration_curve"' in listing


def test_sql_query_names_only_shipped_queries_never_a_file_of_the_server(client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.sql"
    secret.write_text("SELECT 'server-file-7f3a' AS leaked\n")
    for name in [str(secret), str(tmp_path / "secret"), "/etc/hostname", "../sql/metrics_by_run.sql"]:
        for url in ("/sql", "/sql.csv"):
            answer = client.get(url, params={"query": name})
            assert answer.status_code == 404 and "no shipped query" in answer.text, (url, name, answer.text[:500])
            assert "server-file-7f3a" not in answer.text
    assert "metrics_by_run" in get(client, "/sql?query=metrics_by_run.sql")  # a shipped name, with .sql, still works


def test_sql_result_keeps_columns_of_the_same_name(client: TestClient) -> None:
    page = get(client, "/sql?q=" + quote("SELECT 1 AS a, 2 AS a"))
    assert cells(page, "sql-result") == [["1", "2"]]
    assert client.get("/sql.csv?q=" + quote("SELECT 1 AS a, 2 AS a")).text.splitlines() == ["a,a", "1,2"]


@pytest.mark.parametrize("statement", [
    "DELETE FROM runs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "ATTACH '/tmp/x.db' AS x",
    "SELECT 1; SELECT 2",
    "SELECT * FROM no_such_view",
])
def test_sql_box_refuses_what_capstore_sql_refuses_in_the_same_words(client: TestClient, serve_store: ServeStore,
                                                                      statement: str) -> None:
    answer = client.get("/sql", params={"q": statement})
    assert answer.status_code == 400 and "Traceback" not in answer.text
    shown = html.unescape(re.search(r'id="sql-error">(.*?)</p>', answer.text, re.S).group(1))
    cli_answer = CliRunner().invoke(cli, ["sql", statement, "--db", serve_store.db])
    assert cli_answer.exit_code == 2
    assert shown == cli_answer.output.strip().splitlines()[-1]


def test_sql_row_cap_csv_download_and_time_limit(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from capstore.serve import sql_page

    monkeypatch.setattr(sql_page, "DEFAULT_MAX_ROWS", 25)
    page = get(client, "/sql?q=SELECT+range+AS+n+FROM+range(30)")
    assert len(cells(page, "sql-result")) == 25 and "(showing 25 of 30 rows; download the CSV for all)" in page
    csv = client.get("/sql.csv?q=SELECT+range+AS+n+FROM+range(30)")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines() == ["n"] + [str(i) for i in range(30)]
    monkeypatch.setattr(sql_page, "DEFAULT_TIMEOUT_S", 0.3)
    slow = client.get("/sql", params={"q": "SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range + b.range = -1"})
    assert slow.status_code == 400 and "time limit" in slow.text


# -- media ----------------------------------------------------------------------------------------


def test_images_by_sha_with_content_type_and_caching_headers(client: TestClient, serve_store: ServeStore) -> None:
    sha = serve_store.shas[serve_store.items[0]]
    answer = client.get(f"/media/{sha}")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    with serve_store.store.read() as s:
        assert answer.content == read_image(s, sha).data
    assert "immutable" in answer.headers["cache-control"] and sha in answer.headers["etag"]
    again = client.get(f"/media/{sha}", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_thumbnails_are_made_once_and_kept(client: TestClient, serve_store: ServeStore, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from capstore.serve.media import Thumbnails

    made: list[str] = []
    original = Thumbnails._make
    monkeypatch.setattr(Thumbnails, "_make", lambda self, sha, target: (made.append(sha), original(self, sha, target)))
    sha = serve_store.shas[serve_store.items[2]]
    first = client.get(f"/thumbs/{sha}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "JPEG" and max(image.size) <= 256
    second = client.get(f"/thumbs/{sha}")
    assert second.content == first.content and made == [sha]
    assert (tmp_path / "thumbs" / sha[:2] / f"{sha}-256.jpg").read_bytes() == first.content


# -- bad URLs, the token and read-only -------------------------------------------------------------


def test_bad_urls_are_404_pages_never_tracebacks(client: TestClient, serve_store: ServeStore) -> None:
    s = serve_store
    text_sha = hashlib.sha256(mils_text(s.items[0], 0, 0).encode()).hexdigest()  # a text's sha, not a medium's
    for url in ["/runs/999999", "/runs/abc", "/runs/-1", "/runs/0", "/runs/99999999999999999999999",
                f"/runs/{s.mils}?page=abc", f"/runs/{s.mils}?page=0", f"/runs/{s.mils}?page=99",
                "/runs/999999/status.json", "/items/999999", "/items/abc", f"/items/{s.items[0]}?run=abc",
                f"/items/{s.items[0]}?run=999999", f"/compare?runs={s.mils},999999", f"/compare?runs={s.mils},x",
                f"/compare?runs={s.mils},{s.baseline}&page=9", "/media/" + "0" * 64, "/media/nothex",
                f"/media/{text_sha}", f"/thumbs/{text_sha}", "/thumbs/../../etc/passwd", "/static/nope.css",
                "/no/such/page"]:
        page = get(client, url, 404)
        assert 'class="error"' in page, url
    assert "pick two or more runs" in get(client, f"/compare?runs={s.mils}", 400)
    assert "no shipped query nope" in get(client, "/sql?query=nope", 404)


def test_nothing_writes_the_store(client: TestClient, serve_store: ServeStore) -> None:
    before = _digest(serve_store)
    for url in ["/runs", f"/runs/{serve_store.mils}", f"/items/{serve_store.items[0]}",
                f"/compare?runs={serve_store.mils},{serve_store.baseline}", "/sql?query=metrics_by_run",
                f"/thumbs/{serve_store.shas[serve_store.items[0]]}"]:
        get(client, url)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = client.request(method, "/runs")
        assert answer.status_code == 405 and "this viewer only reads" in answer.text
    assert _digest(serve_store) == before


def _digest(serve_store: ServeStore) -> str:
    """Every row of every table, hashed."""
    engine = serve_store.store.engine
    meta = MetaData()
    meta.reflect(engine)
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for name in sorted(meta.tables):
            for row in sorted(repr(tuple(r)) for r in conn.execute(select(meta.tables[name]))):
                digest.update(row.encode())
    return digest.hexdigest()


def test_token_is_required_on_every_request_and_remembered_by_a_cookie(serve_store: ServeStore,
                                                                         tmp_path: Path) -> None:
    token = "s3cret-token-42"
    app = make_app(serve_store.store, token=token, thumbnails=tmp_path)
    with TestClient(app, base_url=BASE) as c:
        for url in ["/runs", f"/runs/{serve_store.mils}", "/static/style.css", "/runs?token=wrong",
                    f"/media/{serve_store.shas[serve_store.items[0]]}"]:
            denied = c.get(url)
            assert denied.status_code == 401 and "access token" in denied.text and "serve-mils" not in denied.text
        opened = c.get(f"/runs?token={token}")
        assert opened.status_code == 200 and "serve-mils" in opened.text and "capstore_token" in opened.headers["set-cookie"]
        assert c.get(f"/runs/{serve_store.mils}").status_code == 200  # the cookie now
    with TestClient(app, base_url=BASE) as c:
        assert c.get("/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_requests_addressed_to_another_host_name_are_refused(serve_store: ServeStore, tmp_path: Path) -> None:
    app = make_app(serve_store.store, thumbnails=tmp_path)
    with TestClient(app, base_url="http://rebound.example.com") as c:
        answer = c.get("/runs")
        assert answer.status_code == 400 and "localhost" in answer.text
    with TestClient(make_app(serve_store.store, loopback_only=False, thumbnails=tmp_path),
                    base_url="http://viewer.example.com") as c:
        assert c.get("/runs").status_code == 200
    for loopback in ("http://127.0.0.2:8765", "http://[::1]:8765", "http://127.0.0.1"):  # all of 127/8, and ::1
        with TestClient(app, base_url=loopback) as c:
            assert c.get("/runs").status_code == 200, loopback
    with TestClient(app, base_url="http://localhost:8765") as c:
        page = c.get("/runs")
        assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_a_real_run_store_renders_every_page(analysis_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The analysis tests' store (runs made by the run engine, candidate-scope CIDEr): every page answers."""
    a = analysis_store
    with TestClient(make_app(a.store, thumbnails=tmp_path), base_url=BASE) as c:
        with a.store.read() as s:
            item = s.scalar(select(Caption.item_id).where(Caption.run_id == a.mils).limit(1))
            n_candidates = s.scalar(select(text("count(*)")).select_from(Candidate).where(
                Candidate.run_id == a.mils, Candidate.item_id == item))
        for url in ["/runs", f"/runs/{a.mils}", f"/runs/{a.small_pool}", f"/runs/{a.baseline}",
                    f"/compare?runs={a.mils},{a.small_pool},{a.baseline}", "/sql?query=iteration_curve"]:
            get(c, url)
        page = get(c, f"/items/{item}?run={a.mils}")
        assert page.count("<tr class=\"step\"") == 4  # iterations 0..3
        tried = page.split('id="trajectory"')[1]
        assert len(re.findall(r"<tr(?: class=\"is-kept\")?><td class=\"num\">\d+</td>", tried)) == n_candidates
        assert "<th class=\"num\">CIDEr</th>" in tried  # candidate-scope CIDEr beside each candidate
        assert page.count('<svg class="chart"') == 1
        run_page = get(c, f"/runs/{a.mils}")
        assert run_page.count('<svg class="chart"') == 3  # score curve, best-so-far CIDEr curve, quality vs cost



def test_videos_are_served_by_path_with_their_type_and_have_no_thumbnail(tmp_path: Path) -> None:
    from capstore.datasets import add_dataset
    from capstore.store.schema import Item
    from tests.media_files import write_json, write_video

    video = write_video(tmp_path / "media" / "video0.mp4")
    spec = write_json(tmp_path / "msrvtt.json", {"videos": [{"video_id": "video0", "split": "test"}],
                                                 "sentences": [{"video_id": "video0", "caption": "a square moves"}]})
    store = open_store(str(tmp_path / "v.db"))
    try:
        add_dataset(store, "clips", "msrvtt", spec, media=tmp_path / "media")
        with store.read() as s:
            item_id, sha = s.execute(select(Item.id, Item.image_sha)).one()
        with TestClient(make_app(store, thumbnails=tmp_path / "thumbs"), base_url=BASE) as c:
            answer = c.get(f"/media/{sha}")
            assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4"
            assert answer.content == video.read_bytes() and "immutable" in answer.headers["cache-control"]
            assert c.get(f"/thumbs/{sha}").status_code == 404
            page = get(c, f"/items/{item_id}")
            assert f'<video class="full" src="/media/{sha}"' in page and "a square moves" in page
    finally:
        store.dispose()
