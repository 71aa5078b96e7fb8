"""Checks of a run's backends before anything is stored: device, dtypes, weights, keys, network.

``check_backends`` refuses, with one line, what would otherwise fail only once a run exists and
its models load (or, for a hub name on a machine without internet, after minutes of the hub
client's retries): ``--device cuda`` without CUDA, an unknown dtype, ``openai:`` without
``OPENAI_API_KEY``, ``vllm:`` where vllm or a GPU is missing, an open_clip name it does not know
(``open_clip:`` and the video scorer ``open_clip-frames:``; ``xclip:`` and ``clap:`` are checked as hub names or folders),
a weights folder that does not exist, and
a hub name whose weights are not in the local Hugging Face cache when the hub cannot be reached. The hub is probed once per process,
with one TCP connection bounded to ``PROBE_SECONDS`` (DNS included); with ``HF_HUB_OFFLINE=1`` it
is not probed at all. Nothing here imports torch or loads a model.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from capstore.backends.cuda_probe import cuda_devices
from capstore.backends.devices import check_dtype, resolve_device
from capstore.backends.models import hub_snapshot
from capstore.backends.registry import BackendSpec, parse_spec
from capstore.errors import BackendError, InputError

PROBE_SECONDS = 1.5
HUB_BACKENDS = ("hf", "vllm", "blip2", "llava", "xclip", "clap")  # their MODEL is a folder or a hub repo id
OPEN_CLIP_BACKENDS = ("open_clip", "open_clip-frames")  # MODEL is an open_clip name (+ @TAG) or a folder
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (as huggingface_hub reads it): never download, fail at once."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def looks_like_path(model: str) -> bool:
    """A folder (absolute, relative, home, nested) rather than a hub repo id (``org/name`` or ``name``)."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or Path(model).exists()


def check_weights_source(spec: BackendSpec) -> None:
    """A folder given as the model must exist (cheap; backends call it when they are built)."""
    if spec.backend in HUB_BACKENDS and looks_like_path(spec.model):
        folder = Path(spec.model).expanduser()
        if not folder.exists():
            raise BackendError(f"{spec.kind} {spec}: no such folder {folder} (and not a hub name org/model)")


def open_clip_name(spec: BackendSpec) -> str:
    """The name open_clip loads ``spec`` by (``local-dir:``, ``hf-hub:`` or a built-in config), checked
    without importing open_clip (which imports torch): BackendError for a name it does not know."""
    if Path(spec.model).exists():
        folder = Path(spec.model).resolve()
        if not (folder / "open_clip_config.json").is_file():
            raise BackendError(f"cannot load open_clip model {spec}: {folder} has no open_clip_config.json")
        return f"local-dir:{folder}"
    if spec.model.startswith("hf-hub:"):
        return spec.model
    config = spec.model.replace("/", "-")  # open_clip's own clean-up of old-style names
    if "open_clip" in sys.modules and sys.modules["open_clip"].get_model_config(config) is not None:
        return spec.model  # already imported: it also knows configs added at run time
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        raise BackendError(f"cannot load open_clip model {spec}: open_clip is not installed (pip install open_clip_torch)")
    configs = Path(list(found.submodule_search_locations)[0]) / "model_configs"
    if not (configs / f"{config}.json").is_file():
        raise BackendError(f"cannot load open_clip model {spec}: unknown model name {spec.model!r} "
                           f"(open_clip knows the names in {configs})")
    return spec.model


def hub_address() -> tuple[str, int]:
    """(host, port) the hub client would connect to first: a proxy if one is set, else ``HF_ENDPOINT``."""
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            return _host_port(os.environ[var])
    return _host_port(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        port = default
    return parts.hostname or url, port


@lru_cache(maxsize=8)
def hub_reachable(address: tuple[str, int] | None = None, timeout: float = PROBE_SECONDS) -> bool:
    """One TCP connection to the hub (or its proxy), name lookup included, within ``timeout`` seconds."""
    host, port = address or hub_address()
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # A thread bounds the name lookup too, which create_connection's timeout does not cover.
    probe = threading.Thread(target=connect, daemon=True, name="capstore-hub-probe")
    probe.start()
    probe.join(timeout)
    return bool(result and result[0])


def _needs_hub(spec: BackendSpec) -> bool:
    """Whether loading ``spec`` may have to download from the hub (weights not on this machine)."""
    if spec.backend in OPEN_CLIP_BACKENDS:
        if Path(spec.model).exists():
            return False
        if spec.model.startswith("hf-hub:"):
            return hub_snapshot(spec.model[len("hf-hub:"):]) is None
        return spec.tag is not None  # a pretrained tag: open_clip fetches it through the hub unless cached
    if spec.backend in HUB_BACKENDS:
        return not looks_like_path(spec.model) and hub_snapshot(spec.model) is None
    return False


def check_hub(spec: BackendSpec) -> None:
    """Refuse at once a model that must come from the hub when the hub cannot be reached."""
    if not _needs_hub(spec):
        return
    if spec.backend in OPEN_CLIP_BACKENDS and not spec.model.startswith("hf-hub:"):
        # Whether open_clip's tag is cached cannot be told without importing it (and torch): only
        # refuse when the hub is unreachable and the hub client would otherwise retry for minutes.
        if not hub_offline() and not hub_reachable():
            host, port = hub_address()
            raise BackendError(f"{spec.kind} {spec}: {host}:{port} cannot be reached (no network?); on a machine "
                               "without internet set HF_HUB_OFFLINE=1 to load the weights from the local cache")
        return
    if hub_offline():
        raise BackendError(f"{spec.kind} {spec}: the weights are not in the local Hugging Face cache and "
                           "HF_HUB_OFFLINE=1 forbids downloading them (download them first, or give a folder)")
    if not hub_reachable():
        host, port = hub_address()
        raise BackendError(f"{spec.kind} {spec}: the weights are not in the local Hugging Face cache and {host}:{port} "
                           "cannot be reached (no network?); download them where there is, or give a folder "
                           "(set HF_HUB_OFFLINE=1 to fail at once without probing)")


def check_api_key(spec: BackendSpec, base_url: str | None) -> None:
    """``openai:`` needs ``OPENAI_API_KEY``, unless it talks to another server (``--base-url``), which may not."""
    if spec.backend != "openai" or os.environ.get("OPENAI_API_KEY"):
        return
    from capstore.backends.api_backend import is_openai_api

    if is_openai_api(base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"):
        raise InputError(f"{spec.kind} {spec}: OPENAI_API_KEY is not set (export it, or pass --base-url of a "
                         "compatible server that needs no key)")


def check_vllm(spec: BackendSpec, device: str | None = "auto") -> None:
    """``vllm:`` needs vllm in this environment, a CUDA GPU and a CUDA device (never ``--device cpu``)."""
    if spec.backend != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise BackendError(f"{spec.kind} {spec}: vllm is not installed here (it cannot be installed next to "
                           "capstore's torch); run `vllm serve NAME` in its own environment and use "
                           "--generator openai:NAME --base-url http://HOST:PORT/v1")
    if not cuda_devices():
        raise BackendError(f"{spec.kind} {spec}: vllm needs a CUDA GPU; none is available here (use --generator hf:…)")
    if (device or "auto") == "cpu":
        raise BackendError(f"{spec.kind} {spec}: vllm runs on CUDA only, not --device cpu")


def check_backends(specs: Iterable[tuple[str, str | None]], *, device: str | None = "auto",
                   dtype: str | None = None, scorer_dtype: str | None = None, generator_dtype: str | None = None,
                   base_url: str | None = None, adapter: str | None = None) -> None:
    """Refuse, before a run is created, backends that cannot work here; one-line InputError/BackendError.

    ``specs`` are (kind, ``BACKEND:MODEL[@TAG]``) pairs; None entries are skipped.
    """
    for value, option in ((dtype, "--dtype"), (scorer_dtype, "--scorer-dtype"), (generator_dtype, "--generator-dtype")):
        check_dtype(value, option)
    parsed = [parse_spec(kind, text) for kind, text in specs if text]
    resolve_device(device)  # --device cuda without CUDA, or a device name we do not know
    if adapter is not None and not Path(adapter).is_dir():
        raise InputError(f"--adapter {adapter}: no such folder")
    for spec in parsed:
        if spec.backend in OPEN_CLIP_BACKENDS:
            open_clip_name(spec)
        check_weights_source(spec)
        check_vllm(spec, device)
        check_api_key(spec, base_url)
        check_hub(spec)
