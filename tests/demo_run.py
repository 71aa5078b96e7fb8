"""One first ``capstore demo`` through the CLI, run once per test session and shared by the demo tests.

It trains the demo models in its own work folder (so the first run really trains, and the rerun
test can count that it trains nothing), runs the four runs, evaluates them and writes the report.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from capstore.cli.main import cli
from capstore.store import Store, open_store


@dataclass(frozen=True)
class DemoRun:
    workdir: Path
    db: Path
    output: str

    @property
    def store(self) -> Store:
        return open_store(str(self.db))

    @property
    def models(self) -> Path:
        return self.workdir / "models"


def run_demo_cli(workdir: Path, db: Path, *extra: str) -> str:
    """``capstore --db DB demo --workdir WORKDIR …``; its output (stdout and stderr), asserting success."""
    import traceback

    result = CliRunner().invoke(cli, ["--db", str(db), "demo", "--workdir", str(workdir), *extra])
    why = "".join(traceback.format_exception(result.exception)) if result.exception else ""
    assert result.exit_code == 0, result.output + why
    return result.output


@functools.cache
def first_demo() -> DemoRun:
    """The session's first demo (trains, runs, evaluates, reports), made on first use."""
    root = Path(tempfile.mkdtemp(prefix="capstore-demo-test-"))
    atexit.register(shutil.rmtree, root, True)
    workdir, db = root / "work", root / "demo.db"
    return DemoRun(workdir, db, run_demo_cli(workdir, db, "--quiet"))
