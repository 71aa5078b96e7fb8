"""SLURM without Ray: an ``sbatch`` job array whose tasks are each one ``capstore worker RUN``.

Nothing coordinates the tasks but the store: each claims items with leases, so tasks may start late,
run on any node, be pre-empted or requeued; a task that dies leaves its items to the others within
one lease. Array tasks may land on several machines, so the store must be PostgreSQL.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from capstore.errors import InputError
from capstore.runs.create import load_run
from capstore.store.engine import Store

MAX_ARRAY = 1_000  # SLURM's default MaxArraySize is 1001 (indices 0-1000)
MAX_GPUS = 64
# SLURM --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or UNLIMITED.
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$")
_PARTITION = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")


def slurm_script(store: Store, run_id: int, array: int, gpus: int = 1, time_limit: str = "4:00:00",
                 partition: str | None = None) -> str:
    """The sbatch script of a job array of ``array`` tasks, each running ``capstore worker run_id``."""
    _check(store, array, gpus, time_limit, partition)
    with store.read() as s:
        run = load_run(s, run_id)
        if run.status == "external":
            raise InputError(f"run {run_id} holds imported results; there is nothing to run")
        method = run.method
    url = make_url(store.url)
    if url.password:  # never written to a file: the tasks read it from the environment sbatch passes on
        db_line = (': "${CAPSTORE_DB:?export CAPSTORE_DB=<the store URL> before sbatch '
                   '(it holds a password, so it is not written here)}"')
    else:
        db_line = f"export CAPSTORE_DB={shlex.quote(store.url)}"
    local = url.host in ("localhost", "127.0.0.1", "::1") or (url.host is None and store.dialect == "postgresql")
    reach = ([f"# NOTE: the store's URL names this machine ({url.host or 'a local socket'}): tasks on other nodes "
              "need the database host's name in CAPSTORE_DB."] if local else [])
    directives = [f"--job-name=capstore-run-{run_id}", f"--array=0-{array - 1}", f"--time={time_limit}",
                  f"--output=capstore-run-{run_id}-%A_%a.out"]
    if gpus:
        directives.append(f"--gres=gpu:{gpus}")
    if partition:
        directives.append(f"--partition={partition}")
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        f"# capstore run {run_id} ({method}) as a SLURM job array of {array} task(s): submit with `sbatch FILE`.",
        "# Each task is one `capstore worker`: tasks share the run through leases in the store, in any",
        "# order and on any node; a task that dies (pre-empted, node lost) leaves its items to the others",
        "# within one lease ($CAPSTORE_LEASE_SECONDS, default 60 s). Add tasks later with another sbatch.",
        *reach,
        "set -euo pipefail",
        db_line,
        f'echo "capstore run {run_id}: array task ${{SLURM_ARRAY_TASK_ID:-?}} on $(hostname)"',
        f"exec {_capstore_command()} worker {run_id} --quiet",
        "",
    ])


def _check(store: Store, array: int, gpus: int, time_limit: str, partition: str | None) -> None:
    if store.dialect == "sqlite":
        raise InputError(f"a SQLite store ({store.engine.url.database}) lives on one machine and SLURM array tasks "
                         "may run on several: use a PostgreSQL store (--db postgresql+psycopg://…)")
    if not 1 <= array <= MAX_ARRAY:
        raise InputError(f"--array {array}: expected 1 to {MAX_ARRAY:,} tasks")
    if not 0 <= gpus <= MAX_GPUS:
        raise InputError(f"--gpus {gpus}: expected 0 to {MAX_GPUS} per task")
    if not _TIME.match(time_limit):
        raise InputError(f"--time {time_limit!r}: expected SLURM's MINUTES, HH:MM:SS or D-HH:MM:SS (e.g. 4:00:00)")
    if partition is not None and not _PARTITION.match(partition):
        raise InputError(f"--partition {partition!r}: expected a partition name (letters, digits, _ . -; commas between names)")


def _capstore_command() -> str:
    """This installation's ``capstore``, by absolute path (the tasks' PATH may not have it)."""
    script = Path(sys.executable).with_name("capstore")
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m capstore.cli.main"
