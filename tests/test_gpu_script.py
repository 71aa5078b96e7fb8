"""``benchmarks/gpu_backends.py`` without a GPU: its one-line refusal, its CPU smoke mode, its exit codes.

On a GPU the script checks what no CPU test can (see benchmarks/README.md); here it must refuse
cleanly, and its ``--small`` mode must run every section through the same code on tiny configs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_backends.py"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


def test_without_cuda_it_refuses_in_one_line() -> None:
    from capstore.backends.cuda_probe import cuda_devices

    if cuda_devices():
        pytest.skip("this machine has CUDA: the script would run")
    done = _run("--json", "/dev/null")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no CUDA device" in done.stderr and "--small" in done.stderr


def test_a_failed_section_exits_non_zero(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = _run("--small", "--skip", "scorer,generator,blip2,llava,vllm", "--json", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED mils: CheckFailed: needs the scorer and generator sections" in done.stdout
    assert json.loads(out.read_text())["failures"] == ["mils: CheckFailed: needs the scorer and generator sections"]


def test_small_mode_runs_every_section_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = _run("--small", "--pool-size", "100", "--e2e-images", "2", "--answer-tokens", "8", "--max-new-tokens", "12",
                "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert report["failures"] == [] and report["small"] is True
    assert set(sections) == {"scorer", "generator", "mils", "blip2", "llava", "vllm", "projection"}
    assert sections["mils"]["status"] == "done" and sections["mils"]["images"] == 2
    assert set(sections["mils"]["device_s_per_image"]) >= {"encode_pool", "encode_image", "generate"}
    assert sections["generator"]["params"] == {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 3000}
    assert {"greedy", "lavis-coco"} <= set(sections["blip2"]) and "greedy" in sections["llava"]
    assert "skipped" in sections["vllm"]  # no vllm in this environment
    projection = sections["projection"]
    assert projection["mils_gpu_hours_upper"] > 0 and projection["study"]["mils_gpu_hours"] == 116.0
