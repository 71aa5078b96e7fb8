"""The viewer while a run works, and ``capstore serve`` itself (the command, the address, the token).

A writer thread commits MILS iterations the way a worker does while the pages are read over and
over: every answer is whole (200, never an error page), progress only goes forward, and once the
writer is done the pages show every iteration. Then the real command: it binds, prints its URL,
answers, and stops on Ctrl-C; a port in use or a bad token is one line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from capstore.serve.app import make_app
from capstore.serve.server import ServeOptions, address_warnings, check_options, is_loopback, url_of
from capstore.store import open_store
from capstore.store.schema import Run, WorkItem
from tests.serve_helpers import add_iteration, build_serve_store

BASE = "http://127.0.0.1"
MORE_ITERATIONS = 4


def test_pages_stay_whole_and_current_while_a_run_commits(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    try:
        fixture = build_serve_store(store, db_url)
        run_id, items = fixture.mils, fixture.items
        with store.write() as s:  # the run works again: a resumed run extending its iterations
            s.execute(update(Run).where(Run.id == run_id).values(status="running", finished_at=None))
            s.execute(update(WorkItem).where(WorkItem.run_id == run_id).values(status="leased", lease_owner="w:1:x"))
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for it in range(3, 3 + MORE_ITERATIONS):
                    add_iteration(store, run_id, items, it)
                    time.sleep(0.05)
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

        app = make_app(store, thumbnails=tmp_path, idle_close_s=0.2)
        with TestClient(app, base_url=BASE) as client:
            writer = threading.Thread(target=work)
            writer.start()
            seen: list[int] = []
            while writer.is_alive() or len(seen) < 3:
                page = client.get(f"/runs/{run_id}")
                assert page.status_code == 200, page.text[:500]
                seen.append(len(re.findall(r'<span class="chip">it\. \d+: 6</span>', page.text)))
                assert client.get("/runs.json").status_code == 200
                item = client.get(f"/items/{items[0]}")
                assert item.status_code == 200 and 'id="trajectory"' in item.text
            writer.join()
            assert not errors, errors
            assert seen == sorted(seen), "progress went backwards"
            final = client.get(f"/runs/{run_id}").text
            assert len(re.findall(r'<span class="chip">it\. \d+: 6</span>', final)) == 3 + MORE_ITERATIONS
            curve = re.search(r'id="iteration-curve">.*?<tbody>(.*?)</tbody>', final, re.S).group(1)
            assert curve.count("<tr>") == 3 + MORE_ITERATIONS  # the mirror was synced: the curve has them all
            steps = re.findall(r'<tr class="step" data-iteration="(\d+)"', client.get(f"/items/{items[0]}").text)
            assert steps == [str(i) for i in range(3 + MORE_ITERATIONS)]
    finally:
        store.dispose()


def test_serve_command_binds_prints_its_url_answers_and_stops(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = open_store(str(db))
    build_serve_store(store, str(db))
    store.dispose()
    env = {**os.environ, "CAPSTORE_THUMBNAILS": str(tmp_path / "thumbs")}
    command = [sys.executable, "-m", "capstore.cli.main", "--db", str(db), "serve", "--port", "0", "--token"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:(\d+)/runs\?token=([\w.~-]+)) ", line)
        assert match, line + proc.stderr.read()
        url, port, token = match.group(1), int(match.group(2)), match.group(3)
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200 and "serve-mils" in answer.read().decode()
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/runs", timeout=30)
        assert denied.value.code == 401
        busy = subprocess.run([sys.executable, "-m", "capstore.cli.main", "--db", str(db), "serve", "--port",
                               str(port)], capture_output=True, text=True, timeout=60, env=env)
        assert busy.returncode == 2 and busy.stderr.strip().startswith(f"Error: cannot listen on 127.0.0.1:{port}")
        assert len(busy.stderr.strip().splitlines()) == 1 and token
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 130, proc.stderr.read()  # as every command after Ctrl-C


def test_serve_refuses_bad_options_and_a_missing_store_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from capstore.cli.main import cli

    for args, culprit in ([["--token", "short"], "--token"], [["--port", "70000"], "--port"],
                          [["--host", "no such host.invalid"], "--host"]):
        result = CliRunner().invoke(cli, ["--db", str(tmp_path / "x.db"), "serve", *args])
        assert result.exit_code == 2 and result.output.startswith("Error: ") and culprit in result.output
        assert len(result.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(cli, ["--db", str(tmp_path / "missing.db"), "serve"])
    assert missing.exit_code == 2 and "no store at" in missing.output
    assert not (tmp_path / "missing.db").exists()


def test_non_local_addresses_are_warned_about() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.5.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("example.com")
    assert address_warnings(ServeOptions(host="127.0.0.1")) == []
    open_wide = address_warnings(ServeOptions(host="0.0.0.0"))
    assert len(open_wide) == 2 and "reachable from other machines" in open_wide[0] and "--token" in open_wide[1]
    guarded = address_warnings(ServeOptions(host="0.0.0.0", token="a-long-token"))
    assert len(guarded) == 1 and "plain HTTP" in guarded[0]
    made = check_options("127.0.0.1", 8765, "generate")
    assert made.token and len(made.token) >= 24 and made.token != check_options("127.0.0.1", 8765, "generate").token
    assert url_of(ServeOptions(host="::1", token="tok-12345"), 9000) == "http://[::1]:9000/runs?token=tok-12345"
    with socket.socket() as probe:  # nothing above bound an address
        probe.bind(("127.0.0.1", 0))


def test_every_template_and_static_file_is_package_data() -> None:
    """The pages' files install with the package (pyproject's package-data covers each of them)."""
    import fnmatch
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["capstore"]
    files = [p.relative_to(repo / "capstore").as_posix() for folder in ("templates", "static")
             for p in (repo / "capstore" / "serve" / folder).iterdir() if p.is_file()]
    assert len(files) >= 9
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), files


def test_an_idle_server_lets_other_syncs_of_the_mirror_through(tmp_path: Path) -> None:
    """While a page reads, the server holds the mirror open (a sync elsewhere must wait); once idle for
    ``idle_close_s`` it lets go, and another sync (``capstore sql`` after a worker wrote) goes through."""
    from capstore.analysis.mirror import MirrorBusy, mirror_path, sync_mirror

    db = str(tmp_path / "store.db")
    store = open_store(db)
    try:
        fixture = build_serve_store(store, db)
        with TestClient(make_app(store, thumbnails=tmp_path, idle_close_s=0.5), base_url=BASE) as client:
            assert client.get("/runs").status_code == 200
            add_iteration(store, fixture.mils, fixture.items, 3)  # a worker commits: the mirror has work to do
            with pytest.raises(MirrorBusy):
                sync_mirror(store, mirror_path(store))
            time.sleep(0.8)
            sync_mirror(store, mirror_path(store))  # no MirrorBusy now
            assert "it. 3: 6" in client.get(f"/runs/{fixture.mils}").text
    finally:
        store.dispose()


def test_a_busy_mirror_is_a_503_page_never_the_scanner_in_the_servers_process(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """DuckDB's SQLite scanner links its own SQLite: opened in the server's process beside the threads'
    Python sqlite3 connections, it drops their POSIX locks when it closes the file, and a worker
    starting then resets the WAL's shared memory under their mapping (SIGBUS, seen in this file's
    live test). So on SQLite the server reads through the mirror only: busy, it answers 503 in a
    page and tries again at the next request; the SQL page does not attach the caches either."""
    import capstore.analysis.duckdb_store as duckdb_store
    import capstore.analysis.mirror as mirror

    db = str(tmp_path / "store.db")
    store = open_store(db)
    try:
        fixture = build_serve_store(store, db)
        opened_in_process: list[str] = []
        real_attach = duckdb_store._attach
        monkeypatch.setattr(duckdb_store, "_attach", lambda con, st, role=None: opened_in_process.append(st.dialect)
                            or real_attach(con, st, role))
        real_read = mirror.attach_for_reading
        busy = {"on": True}

        def attach_for_reading(con, st, path):  # type: ignore[no-untyped-def]
            if busy["on"]:
                raise mirror.MirrorBusy("analysis mirror is busy (a notebook keeps it open)")
            return real_read(con, st, path)

        monkeypatch.setattr(mirror, "attach_for_reading", attach_for_reading)
        with TestClient(make_app(store, thumbnails=tmp_path), base_url=BASE) as client:
            page = client.get(f"/runs/{fixture.mils}")
            assert page.status_code == 503 and "busy" in page.text and "Traceback" not in page.text
            busy["on"] = False
            assert client.get(f"/runs/{fixture.mils}").status_code == 200
            client.get("/sql", params={"q": "SELECT count(*) AS n FROM store.embedding_cache"})  # would attach the caches
        assert opened_in_process == []
    finally:
        store.dispose()
