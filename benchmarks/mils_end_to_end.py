"""MILS end to end with the tiny models: time per stage, rows written, and what resuming costs.

Usage::

    .venv/bin/python benchmarks/mils_end_to_end.py                       # 20 demo images x 3 iterations
    .venv/bin/python benchmarks/mils_end_to_end.py --generator fake:mutate --json out.json

Runs go through the CLI (``capstore run`` / ``capstore resume``, separate processes, as a user runs
them) on the demo dataset, with the shared MILS pool and prompt (``--keep 50 --requested 50``):

1. **uninterrupted**: one run on a fresh SQLite store. Time per stage comes from its usage events
   (device-seconds = wall seconds on CPU); rows written are counted per table.
2. **no-op resume**: ``capstore resume`` on that finished run (process start included), and
   ``work(resume=True)`` in-process (what resuming itself costs).
3. **killed and resumed**: the same run on another fresh store, SIGKILLed once ``--kill-at`` of its
   (image, iteration) steps are committed, then ``capstore resume``. Resume overhead = (time until
   the kill + resume) - uninterrupted; steps are checked to be committed once, and the captions to
   equal the uninterrupted run's.

The tiny Llama's output is gibberish by construction: with it, iterations 1.. record
``unparsable_output`` and add no candidates, so its cost is generation alone. ``--generator
fake:mutate`` (a scripted stand-in) exercises the candidate path instead. Numbers: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

TABLES = ("texts", "candidates", "iteration_states", "captions", "work_items", "usage_events", "errors",
          "embedding_cache", "generation_cache")


def cli() -> list[str]:
    return [str(Path(sys.executable).parent / "capstore")]  # the installed command, beside this Python


def run_args(db: Path, args, scorer: str, generator: str) -> list[str]:  # type: ignore[no-untyped-def]
    pool, prompt = bc.shared_file(bc.POOL), bc.shared_file(bc.PROMPT)
    return [*cli(), "--db", str(db), "run", "--method", "mils", "--dataset", "demo", "--limit", str(args.images),
            "--scorer", scorer, "--generator", generator, "--pool", str(pool), "--prompt", str(prompt),
            "--iterations", str(args.iterations), "--keep", "50", "--requested", "50",
            "--max-new-tokens", str(args.max_new_tokens), "--device", "cpu", "--quiet"]


def fresh_store(path: Path) -> None:
    from capstore.datasets import make_demo
    from capstore.store import open_store

    store = open_store(str(path))
    make_demo(store)
    store.dispose()


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def timed_cli(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout.strip()


def captions(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT i.external_id, c.text_sha FROM captions c JOIN items i ON i.id = c.item_id"))


def uninterrupted(db: Path, argv: list[str]) -> dict[str, Any]:
    from capstore.store import open_store

    before = counts(db)
    wall, out = timed_cli(argv)
    after = counts(db)
    store = open_store(str(db))
    stages = bc.usage_by_stage(store, 1)
    store.dispose()
    return {"wall_s": wall, "output": out, "stages": stages, "rows": {t: after[t] - before[t] for t in TABLES}}


def noop_resume(db: Path) -> dict[str, Any]:
    from capstore.runs.engine import work
    from capstore.store import open_store

    wall, out = timed_cli([*cli(), "--db", str(db), "resume", "1", "--quiet"])
    store = open_store(str(db))
    with bc.stopwatch() as t:
        summary = work(store, 1, progress=False, resume=True)
    store.dispose()
    return {"cli_wall_s": wall, "cli_output": out, "in_process_s": t["s"], "steps": summary.steps}


def killed_and_resumed(db: Path, argv: list[str], kill_at: int) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    while proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db, timeout=5) as con:
                committed = con.execute("SELECT count(*) FROM iteration_states").fetchone()[0]
        except sqlite3.OperationalError:
            continue
        if committed >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            break
    until_kill = time.perf_counter() - start
    with sqlite3.connect(db) as con:
        at_kill = con.execute("SELECT count(*) FROM iteration_states").fetchone()[0]
    resume_s, out = timed_cli([*cli(), "--db", str(db), "resume", "1", "--quiet"])
    with sqlite3.connect(db) as con:
        total = con.execute("SELECT count(*) FROM iteration_states").fetchone()[0]
    return {"killed": proc.returncode == -signal.SIGKILL, "until_kill_s": until_kill, "steps_at_kill": at_kill,
            "resume_s": resume_s, "resume_output": out, "steps_total": total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--generator", default=None, help="default: the tiny Llama (hf:…)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="capstore's default generation limit")
    p.add_argument("--kill-at", type=float, default=0.5, help="fraction of steps committed when the run is killed")
    p.add_argument("--models", default=str(bc.REPO / "capstore-data" / "models"), help="tiny models folder")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    models = bc.tiny_models(args.models)
    generator = args.generator or models.specs["generator"]
    tmp = Path(tempfile.mkdtemp(prefix="capstore-e2e-"))
    res: dict[str, Any] = {"machine": bc.machine(), "load_average_at_start": os.getloadavg()[0],
                           "images": args.images, "iterations": args.iterations, "generator": generator,
                           "max_new_tokens": args.max_new_tokens}
    print(f"{res['machine']}; MILS on {args.images} demo images x {args.iterations} iterations, generator {generator}",
          flush=True)
    steps = args.images * (args.iterations + 1)

    a, b = tmp / "a.db", tmp / "b.db"
    fresh_store(a)
    fresh_store(b)
    res["uninterrupted"] = u = uninterrupted(a, run_args(a, args, models.specs["scorer"], generator))
    print(f"uninterrupted: {u['wall_s']:.1f} s ({u['output']})", flush=True)
    for stage, e in sorted(u["stages"].items()):
        print(f"  {stage:<13} {e['device_seconds']:7.2f} s in {int(e['calls'])} model calls, {int(e['items'])} items, "
              f"{int(e['cached'])} cached, tokens in/out {int(e['tokens_in'])}/{int(e['tokens_out'])}", flush=True)
    print("  rows written: " + ", ".join(f"{t} {n:,}" for t, n in u["rows"].items()), flush=True)

    res["noop_resume"] = n = noop_resume(a)
    print(f"resume of the finished run: {n['cli_wall_s']:.2f} s as a command, {n['in_process_s'] * 1000:.0f} ms "
          f"in-process, {n['steps']} steps", flush=True)

    kill_at = max(1, int(steps * args.kill_at))
    res["killed"] = k = killed_and_resumed(b, run_args(b, args, models.specs["scorer"], generator), kill_at)
    k["same_captions"] = captions(a) == captions(b)
    k["overhead_s"] = k["until_kill_s"] + k["resume_s"] - u["wall_s"]
    print(f"killed after {k['until_kill_s']:.1f} s with {k['steps_at_kill']}/{steps} steps committed; resume took "
          f"{k['resume_s']:.1f} s; {k['steps_total']} steps in all (each once); captions equal to the uninterrupted "
          f"run's: {k['same_captions']}; overhead {k['overhead_s']:+.1f} s", flush=True)
    res["load_average_at_end"] = os.getloadavg()[0]
    bc.write_json(args.json, res)


if __name__ == "__main__":
    main()
