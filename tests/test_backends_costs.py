"""Costs of starting: weight fingerprints paid once per file version; workers spread over the GPUs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capstore.backends import models
from capstore.backends.cuda_probe import CudaDevice


@pytest.fixture
def counted_hashes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Each file whose bytes are read to hash it; a fresh per-test file-hash cache, and no in-process memo."""
    monkeypatch.setenv("CAPSTORE_CACHE_DIR", str(tmp_path / "cache"))
    models._file_sha.cache_clear()
    read: list[str] = []
    real = models.hash_file

    def spy(path: str) -> str:
        read.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(models, "hash_file", spy)
    yield read
    models._file_sha.cache_clear()


def _folder(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "model-00001.safetensors").write_bytes(os.urandom(4096))
    (root / "model-00002.safetensors").write_bytes(os.urandom(4096))
    (root / "original").mkdir()
    (root / "original" / "consolidated.00.pth").write_bytes(os.urandom(8192))
    return root


def test_a_local_folder_is_hashed_once_per_file_version(counted_hashes: list[str], tmp_path: Path) -> None:
    folder = _folder(tmp_path / "weights")
    first = models.weights_sha(str(folder))
    assert sorted(counted_hashes) == ["config.json", "consolidated.00.pth", "model-00001.safetensors",
                                      "model-00002.safetensors"]
    models._file_sha.cache_clear()  # as a new process would start: only the on-disk cache is left
    counted_hashes.clear()
    assert models.weights_sha(str(folder)) == first and counted_hashes == []
    models._file_sha.cache_clear()
    (folder / "model-00002.safetensors").write_bytes(os.urandom(4096))  # one file changes
    changed = models.weights_sha(str(folder))
    assert counted_hashes == ["model-00002.safetensors"] and changed != first
    assert models.file_sha_cache_path().parent == tmp_path / "cache"


def test_hub_blobs_are_known_by_their_names(counted_hashes: list[str], tmp_path: Path) -> None:
    """A hub snapshot links its large files to blobs named by their content's sha256: never read."""
    data = os.urandom(4096)
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    sha = hashlib.sha256(data).hexdigest()
    (blobs / sha).write_bytes(data)
    (snapshot / "model.safetensors").symlink_to(blobs / sha)
    (snapshot / "config.json").write_text("{}")
    from_hub = models.weights_sha(str(snapshot))
    assert counted_hashes == ["config.json"]
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes(data)
    (copy / "config.json").write_text("{}")
    assert models.weights_sha(str(copy)) == from_hub  # the same weights, hashed from their bytes


def test_an_unwritable_cache_only_costs_a_rehash(counted_hashes: list[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("CAPSTORE_CACHE_DIR", str(blocker / "cache"))
    folder = _folder(tmp_path / "weights")
    first = models.weights_sha(str(folder))
    models._file_sha.cache_clear()
    assert models.weights_sha(str(folder)) == first and len(counted_hashes) == 8


# -- spreading workers over GPUs ---------------------------------------------------------------------

_PICK = ("import sys, time\n"
         "from capstore.backends.devices import spread_over_gpus\n"
         "print(spread_over_gpus(int(sys.argv[1]), sys.argv[2]), flush=True)\n"
         "time.sleep(60)\n")


def _worker(count: int, folder: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", _PICK, str(count), str(folder)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    return proc, int(line)


def test_auto_spreads_worker_processes_over_the_gpus_and_a_dead_one_frees_its_gpu(tmp_path: Path) -> None:
    procs = []
    try:
        picks = []
        for _ in range(4):
            proc, gpu = _worker(3, tmp_path)
            procs.append(proc)
            picks.append(gpu)
        assert picks == [0, 1, 2, 0]  # the least held GPU, lowest index first
        procs[1].kill()  # a worker dies: the kernel drops its lock
        procs[1].wait()
        proc, gpu = _worker(3, tmp_path)
        procs.append(proc)
        assert gpu == 1
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


_RACE = ("import os, sys, time\n"
         "from capstore.backends.devices import spread_over_gpus\n"
         "print('ready', flush=True)\n"
         "while not os.path.exists(sys.argv[3]):\n"
         "    time.sleep(0.001)\n"
         "print(spread_over_gpus(int(sys.argv[1]), sys.argv[2]), flush=True)\n"
         "sys.stdin.read()\n")  # holds its GPU until the test closes stdin


def test_workers_that_start_together_still_spread_over_the_gpus(tmp_path: Path) -> None:
    slots, go = tmp_path / "slots", tmp_path / "go"
    slots.mkdir()
    leftovers = {f"gpu0.{pid}" for pid in range(4_000_000, 4_000_300)}  # dead processes': counting them takes a while
    for name in leftovers:
        (slots / name).touch()
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, "3", str(slots), str(go)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        assert all(p.stdout and p.stdout.readline() == "ready\n" for p in procs)  # all imported, all waiting
        go.touch()
        picks = sorted(int(p.stdout.readline() or -1) for p in procs if p.stdout)
    finally:
        for proc in procs:
            proc.kill()
        errors = [proc.communicate()[1] for proc in procs]
    assert picks == [0, 0, 1, 1, 2, 2], (picks, [e for e in errors if e.strip()])
    # by name: the killed workers' own files stay (gpu0.4709 is a live worker's, not a leftover)
    assert sorted(f.name for f in slots.iterdir() if f.name in leftovers) == []  # leftovers removed


def test_one_process_keeps_one_gpu(tmp_path: Path) -> None:
    from capstore.backends.devices import _held, spread_over_gpus

    try:
        first = spread_over_gpus(4, str(tmp_path))
        assert spread_over_gpus(4, str(tmp_path)) == first  # the scorer and the generator share it
    finally:
        index, fd = _held.pop(str(tmp_path))  # type: ignore[misc]
        os.close(fd)  # type: ignore[arg-type]


def test_resolve_device_auto_with_several_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from capstore.backends import devices

    gpus = tuple(CudaDevice(i, "NVIDIA H200", (9, 0)) for i in range(2))
    monkeypatch.setattr(devices, "cuda_devices", lambda: gpus)
    monkeypatch.setenv("CAPSTORE_GPU_SLOTS", str(tmp_path))
    try:
        assert devices.resolve_device("auto") == "cuda:0"
        assert devices.resolve_device("cuda:1") == "cuda:1" and devices.device_name("cuda:1") == "NVIDIA H200"
        monkeypatch.setattr(devices, "cuda_devices", lambda: gpus[:1])
        assert devices.resolve_device("auto") == "cuda"  # one GPU: nothing to spread
    finally:
        _, fd = devices._held.pop(str(tmp_path))  # type: ignore[misc]
        os.close(fd)  # type: ignore[arg-type]


def test_cpu_timing_counts_wall_time() -> None:
    from capstore.backends.devices import timed

    with timed("cpu") as t:
        time.sleep(0.02)
    assert t.device_seconds == t.wall_seconds >= 0.02
