"""Java children die with their parent: a killed ``capstore eval`` leaves no JVM behind.

The PTB tokenizer, METEOR and SPICE run as Java child processes; started through
``capstore.metrics.java`` they get SIGKILL from the kernel when the process that started them dies
(``prctl(PR_SET_PDEATHSIG)``), also when that process is SIGKILLed and no clean-up code runs.
Processes are read from /proc (psutil is not a dependency).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bad_input import invoke

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append((int(entry.name), cmdline))
    return found


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


PARENT = """
import subprocess, sys, time
from capstore.metrics.java import java_popen
tied = java_popen(["sleep", "60"])
plain = subprocess.Popen(["sleep", "60"])
print(tied.pid, plain.pid, flush=True)
time.sleep(60)
"""


def test_a_child_started_through_java_popen_dies_when_its_parent_is_killed() -> None:
    """The control child, started plainly, survives the same SIGKILL: the test can tell the difference."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert parent.stdout is not None
    tied, plain = map(int, parent.stdout.readline().split())
    try:
        assert _alive(tied) and _alive(plain)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_gone([tied], 3.0) == [], "the tied child outlived its parent"
        assert _alive(plain), "the control child died too: the test would not notice a missing prctl"
    finally:
        for pid in (tied, plain):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_meteor_is_started_with_pycocoevalcaps_own_command() -> None:
    """capstore starts METEOR itself (to tie it to its parent): with exactly the command pycocoevalcap uses."""
    import pycocoevalcap.meteor.meteor as module

    from capstore.metrics.java import meteor_command

    seen: list[list[str]] = []

    class Recorder:  # a Popen that starts nothing (Meteor.__del__ closes and kills it)
        def __init__(self, cmd, **_kwargs):  # type: ignore[no-untyped-def]
            seen.append(list(cmd))
            self.stdin = io.BytesIO()

        def kill(self) -> None:
            pass

        def wait(self) -> int:
            return 0

    real = module.subprocess.Popen
    module.subprocess.Popen = Recorder  # type: ignore[misc]
    try:
        module.Meteor()
    finally:
        module.subprocess.Popen = real  # type: ignore[misc]
    assert seen == [meteor_command(module.METEOR_JAR)]


@pytest.fixture
def run_with_captions(tmp_path: Path) -> tuple[str, int]:
    """The demo dataset and an imported results file: a run to evaluate (METEOR included)."""
    db = str(tmp_path / "store.db")
    assert invoke(["dataset", "demo", "--db", db]).exit_code == 0
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": f"demo-{i:02d}", "caption": f"a red shape number {i}"}
                                   for i in range(24)]))
    done = invoke(["import-results", str(results), "--dataset", "demo", "--label", "r", "--db", db])
    assert done.exit_code == 0, done.output
    return db, int(done.output.split()[1].rstrip(":"))


def test_a_killed_eval_leaves_no_java(run_with_captions: tuple[str, int]) -> None:
    from capstore.metrics.java import require_java

    try:
        require_java()
    except Exception as exc:  # noqa: BLE001 - any reason Java is not there
        pytest.skip(str(exc))
    db, run_id = run_with_captions
    capstore = Path(sys.executable).with_name("capstore")
    proc = subprocess.Popen([str(capstore), "eval", str(run_id), "--no-clipscore", "--quiet", "--db", db],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            for pid, cmdline in _children(proc.pid):
                if "java" in cmdline:
                    seen[pid] = cmdline
            if any("meteor" in c for c in seen.values()):
                break  # METEOR's JVM loads its tables for seconds: it would outlive an untied parent
            time.sleep(0.02)
        assert any("meteor" in c for c in seen.values()), f"no METEOR JVM appeared (eval exit {proc.poll()})"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = _wait_gone(list(seen), 3.0)
        assert left == [], f"Java outlived the killed eval: {[seen[p][:120] for p in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
