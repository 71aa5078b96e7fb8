"""Device choice and device-time measurement.

On CUDA, device-seconds are measured between two synchronisations around the work, so they count
the GPU's time, not only the Python call's. On CPU device-seconds equal wall seconds.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

from capstore.errors import BackendError

T = TypeVar("T")
R = TypeVar("R")

DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"--device {device}: no CUDA device is available on this machine")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise BackendError(f"--device {device!r}: expected auto, cpu or cuda")
    return device


def resolve_dtype(dtype: str | None, device: str):  # -> torch.dtype
    """``auto``/None → float16 on CUDA, float32 on CPU."""
    import torch

    name = dtype or "auto"
    if name not in DTYPES:
        raise BackendError(f"--dtype {name!r}: expected one of {', '.join(DTYPES)}")
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def device_name(device: str) -> str:
    """A human name of the device (``NVIDIA H100 80GB HBM3``, or the CPU's model)."""
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine() or "cpu"


@dataclass
class Timing:
    device_seconds: float = 0.0
    wall_seconds: float = 0.0


@contextmanager
def timed(device: str) -> Iterator[Timing]:
    """Measure the enclosed work: wall seconds, and device seconds synchronised on CUDA."""
    import torch

    timing = Timing()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield timing
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        timing.wall_seconds = timing.device_seconds = time.perf_counter() - start


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
