"""The built wheel carries the CLI, the migrations and the SQL queries inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_cli_migrations_and_sql(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("capstore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = [n for n in names if n.startswith("capstore/migrations/versions/") and n.endswith(".py")]
    assert "capstore/migrations/env.py" in names and "capstore/migrations/script.py.mako" in names
    assert any(n.endswith("0001_initial_schema.py") for n in migrations)
    assert len(migrations) - 1 == len(list((REPO / "migrations" / "versions").glob("0*.py")))
    assert "capstore/cli/main.py" in names
    assert {f"capstore/sql/{p.name}" for p in (REPO / "sql").glob("*.sql")} <= names
    assert any(line.startswith("capstore = capstore.cli.main:main")
               for line in zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode().splitlines())
