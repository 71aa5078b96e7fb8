"""The full-size rehearsal's own path, small: it patches the engine's functions by name to time them,
so a renamed one must fail here, not in the next benchmark run."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, need_shared


def test_the_rehearsal_runs_small_and_accounts_for_the_engine_parts(tmp_path: Path) -> None:
    need_shared("data/mils/image_descriptions_per_class.txt")
    need_shared("data/mils/image_captioning_shorter.txt")
    out = tmp_path / "rehearsal.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "full_scale.py"), "--small", "--dialects", "sqlite",
                           "--workers", "1", "--batch-images", "8", "--no-eval", "--no-queries", "--keep-stores",
                           "--out", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(out.read_text())["configurations"][0]["run"]
    assert run["steps"] == 400  # 40 items x 10 iterations
    for part in ("commit steps", "commit steps: candidates, states, captions", "commit steps: texts",
                 "commit steps: work items", "score cache write", "usage events", "load items", "claim",
                 "caption's first iteration"):
        assert run["parts_s"].get(part, 0) > 0, part  # every instrumented part was called, under its name
    assert 0 < run["engine_overhead_worker_s"] < run["worker_seconds"]
    store = sqlite3.connect(tmp_path / "fullscale_small_sqlite_1w" / "store.db")
    try:  # the run was made with the batch asked for
        assert json.loads(store.execute("SELECT config FROM runs").fetchone()[0])["batch_images"] == 8
    finally:
        store.close()


def test_the_rehearsal_refuses_a_batch_the_engine_would_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "full_scale.py"), "--small", "--dialects", "sqlite",
                           "--batch-images", "0", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("--batch-images 0: expected an integer from 1 to 4,096")
    assert not any(tmp_path.iterdir())  # no store was made
