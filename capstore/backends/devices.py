"""Device choice and device-time measurement.

On CUDA, device-seconds are the time between two CUDA events recorded on the backend's stream
around its own work (forward passes, ``generate``): the GPU's time for that work, without the
host's time before its first kernel or after its last, and without another process's wait on the
store. On CPU device-seconds equal wall seconds.

``--device auto`` on a machine with several GPUs spreads the workers of that machine over them:
each process takes the GPU that the fewest other capstore processes hold (a lock file per process
and GPU, released by the kernel when the process dies, so a killed worker frees its GPU).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

from capstore.backends.cuda_probe import CudaDevice, cuda_devices
from capstore.errors import BackendError, InputError

T = TypeVar("T")
R = TypeVar("R")

DTYPES = ("auto", "float32", "float16", "bfloat16")


def check_dtype(dtype: str | None, option: str = "--dtype") -> str:
    """A dtype name (None = ``auto``); anything else is a one-line InputError."""
    name = dtype or "auto"
    if name not in DTYPES:
        raise InputError(f"{option} {name!r}: expected one of {', '.join(DTYPES)}")
    return name


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` -> ``cuda`` (``cuda:N`` of the least used GPU when there are several) when torch can use
    a GPU here, else ``cpu``; ``cuda`` without one is an error.

    Decided without importing torch (``cuda_probe``), so that backends are cheap to build.
    """
    name = device or "auto"
    found = cuda_devices() if name == "auto" or name.startswith("cuda") else ()
    if name == "auto":
        if not found:
            return "cpu"
        return "cuda" if len(found) == 1 else f"cuda:{spread_over_gpus(len(found))}"
    if name == "cpu":
        return name
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise InputError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if not found:
        raise BackendError(f"--device {name}: no CUDA device is available on this machine")
    if match.group(1) is not None and int(match.group(1)) >= len(found):
        raise BackendError(f"--device {name}: this machine has {len(found)} CUDA device(s), numbered from 0")
    return name


_held: dict[str, object] = {}  # this process's GPU slot (an open, locked file), kept for its lifetime


def gpu_slots_folder() -> str:
    """Where the per-GPU lock files live (``$CAPSTORE_GPU_SLOTS``, else a folder in the temp dir)."""
    return os.environ.get("CAPSTORE_GPU_SLOTS") or os.path.join(tempfile.gettempdir(), f"capstore-gpu-slots-{os.getuid()}")


def spread_over_gpus(count: int, folder: str | None = None) -> int:
    """The GPU index this process works on: the one the fewest live capstore processes hold.

    Chosen once per process (scorer and generator share it). Each holder keeps one locked file
    ``gpuN.PID``; a file whose lock can be taken belongs to a dead process: not counted, removed.
    Counting and taking a GPU happen under an exclusive lock on ``folder/.choose``, so workers that
    start together see each other's choices instead of all taking the same GPU.
    """
    folder = folder or gpu_slots_folder()
    if folder in _held:
        return int(_held[folder][0])  # type: ignore[index]
    import fcntl

    os.makedirs(folder, exist_ok=True)
    chooser = os.open(os.path.join(folder, ".choose"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(chooser, fcntl.LOCK_EX)
        holders = _count_holders(folder, count)
        index = min(range(count), key=lambda i: (holders[i], i))
        fd = os.open(os.path.join(folder, f"gpu{index}.{os.getpid()}"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: only a prober holding .choose could hold it, and none can now
    finally:
        os.close(chooser)  # releases the .choose lock
    _held[folder] = (index, fd)
    return index


def _count_holders(folder: str, count: int) -> list[int]:
    """Live holders per GPU; a slot file nobody holds (its process died) is removed. Call under ``.choose``."""
    import fcntl

    holders = [0] * count
    for entry in os.listdir(folder):
        match = re.fullmatch(r"gpu(\d+)\.(\d+)", entry)
        if not match:
            continue
        path = os.path.join(folder, entry)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live worker
            if int(match.group(1)) < count:
                holders[int(match.group(1))] += 1
        else:  # a dead process's leftover (a live chooser never leaves its file unlocked: it holds .choose)
            with suppress(OSError):
                os.unlink(path)
        finally:
            os.close(fd)
    return holders


def _cuda_device(device: str) -> CudaDevice:
    index = int(device.partition(":")[2] or 0)
    return cuda_devices()[index]


def default_dtype(kind: str, device: str) -> str:
    """MILS's dtypes on CUDA: the scorer in float32, the LLM in bfloat16 (float16 on GPUs without it);
    captioners in float16. Everything in float32 on CPU."""
    if not device.startswith("cuda"):
        return "float32"
    if kind == "scorer":
        return "float32"
    if kind == "generator":
        return "bfloat16" if _cuda_device(device).supports_bfloat16 else "float16"
    return "float16"


def resolve_dtype(dtype: str | None, device: str, kind: str = "captioner") -> str:
    """The dtype name a backend of ``kind`` runs in: the one asked for, or ``default_dtype`` for ``auto``."""
    name = check_dtype(dtype)
    return default_dtype(kind, device) if name == "auto" else name


def torch_dtype(name: str):  # -> torch.dtype
    """``float16`` -> ``torch.float16`` (imports torch: only when a model is loaded)."""
    import torch

    return getattr(torch, check_dtype(name))


def device_name(device: str) -> str:
    """A human name of the device (``NVIDIA H100 80GB HBM3``, or the CPU's model), without importing torch."""
    import platform

    if device.startswith("cuda"):
        return _cuda_device(device).name
    return platform.processor() or platform.machine() or "cpu"


@dataclass
class Timing:
    device_seconds: float = 0.0
    wall_seconds: float = 0.0


@contextmanager
def timed(device: str) -> Iterator[Timing]:
    """Measure the enclosed work: wall seconds, and device seconds (CUDA events on CUDA)."""
    timing = Timing()
    if not device.startswith("cuda"):
        start = time.perf_counter()
        try:
            yield timing
        finally:
            timing.wall_seconds = timing.device_seconds = time.perf_counter() - start
        return
    import torch

    with torch.cuda.device(torch.device(device)):
        stream = torch.cuda.current_stream()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start = time.perf_counter()
        begin.record(stream)
        try:
            yield timing
        finally:
            end.record(stream)
            end.synchronize()
            timing.wall_seconds = time.perf_counter() - start
            timing.device_seconds = begin.elapsed_time(end) / 1000.0


def timed_batches(device: str, todo: Sequence[T], batch_size: int, compute: Callable[[list[T]], Sequence[R]],
                  keep: Callable[[list[T], Sequence[R]], None]) -> float:
    """Run ``compute`` over ``todo`` in batches, ``keep`` each batch's results; returns device-seconds.

    Only ``compute`` (the model) is timed: ``keep`` writes to the store, and a lock wait there
    (SQLite with many workers) must not be billed as device time.
    """
    device_seconds = 0.0
    for start in range(0, len(todo), batch_size):
        batch = list(todo[start : start + batch_size])
        with timed(device) as t:
            results = compute(batch)
        device_seconds += t.device_seconds
        keep(batch, results)
    return device_seconds
