"""Which CUDA devices torch would see, found without importing torch (3+ s) or loading a model.

A backend must know its device and dtype to compute its model's fingerprint, and a run whose every
answer is cached should never pay for ``import torch``. So we ask the CUDA driver directly
(``libcuda`` through ctypes: ``cuInit``, ``cuDeviceGetCount``, names and compute capabilities),
and read whether the installed torch was built with CUDA from ``torch/version.py``. This matches
``torch.cuda.is_available()``: a CUDA build of torch, a driver at least as new as its CUDA major
version, one device or more (``CUDA_VISIBLE_DEVICES`` is applied by the driver for both). Builds
this cannot read (ROCm) fall back to asking torch.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
_VERSION_LINE = re.compile(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.M)


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str  # as torch.cuda.get_device_name reports it (both read the driver)
    capability: tuple[int, int]

    @property
    def supports_bfloat16(self) -> bool:
        """Native bfloat16 from Ampere (compute capability 8.0) on."""
        return self.capability >= (8, 0)


def torch_build() -> dict[str, str | None] | None:
    """``{"cuda": "12.4" | None, "hip": … | None}`` of the installed torch, read from its version file;
    None when torch is not installed or the file cannot be read."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return None
    found = {key: value.strip("'\"") for key, value in _VERSION_LINE.findall(text)}
    return {key: (None if found.get(key) in (None, "None") else found[key]) for key in ("cuda", "hip")}


def _driver_devices(min_major: int) -> tuple[CudaDevice, ...]:
    """The devices the CUDA driver reports, if its version is at least ``min_major``."""
    try:
        lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:  # no NVIDIA driver on this machine
        return ()
    if lib.cuInit(0) != 0:
        return ()
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value // 1000 < min_major:
        return ()  # torch would refuse this driver as too old
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return ()
    devices = []
    for index in range(count.value):
        handle, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(handle), index) != 0:
            return ()
        lib.cuDeviceGetName(name, 256, handle)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, handle)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, handle)
        devices.append(CudaDevice(index, name.value.decode(errors="replace"), (major.value, minor.value)))
    return tuple(devices)


def _torch_devices() -> tuple[CudaDevice, ...]:
    import torch

    if not torch.cuda.is_available():
        return ()
    return tuple(CudaDevice(i, torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
                 for i in range(torch.cuda.device_count()))


@lru_cache(maxsize=1)
def cuda_devices() -> tuple[CudaDevice, ...]:
    """The CUDA devices torch can use here (empty without a CUDA build of torch, a driver or a GPU)."""
    build = torch_build()
    if build is None:
        return ()
    if build["hip"]:  # ROCm: no libcuda to ask
        return _torch_devices()
    if not build["cuda"]:
        return ()
    try:
        major = int(build["cuda"].split(".")[0])
    except ValueError:
        return _torch_devices()
    return _driver_devices(major)
