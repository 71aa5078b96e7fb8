"""One registry of backends, chosen by name: ``KIND`` + ``BACKEND:MODEL[@TAG]``.

Examples: ``--scorer open_clip:ViT-B-32@openai``, ``--generator hf:/models/tiny-llama``,
``--captioner blip2:Salesforce/blip2-flan-t5-xl``. Each backend is one module with a factory
decorated ``@register(kind, name)``; modules are imported only when their backend is asked for,
so torch, transformers and vllm load lazily and ``capstore --help`` stays fast.
Adding a backend = one module + its line in ``_MODULES`` + its test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from capstore.errors import BackendError, InputError

KINDS = ("scorer", "generator", "captioner")

# (kind, backend name) -> module that registers it when imported.
_MODULES: dict[tuple[str, str], str] = {
    ("scorer", "open_clip"): "capstore.backends.scorers.open_clip",
    ("scorer", "open_clip-frames"): "capstore.backends.scorers.open_clip_frames",  # video: mean of K frames
    ("scorer", "xclip"): "capstore.backends.scorers.xclip",  # video
    ("scorer", "clap"): "capstore.backends.scorers.clap",  # audio
    ("generator", "hf"): "capstore.backends.generators.hf",
    ("generator", "vllm"): "capstore.backends.generators.vllm",
    ("generator", "openai"): "capstore.backends.generators.openai",
    ("captioner", "blip2"): "capstore.backends.captioners.blip2",
    ("captioner", "llava"): "capstore.backends.captioners.llava",
    ("captioner", "openai"): "capstore.backends.captioners.openai",
    ("generator", "fake"): "capstore.backends.fake",
    ("captioner", "fake"): "capstore.backends.fake",
}

Factory = Callable[..., Any]
_FACTORIES: dict[tuple[str, str], Factory] = {}


@dataclass(frozen=True)
class BackendSpec:
    """A parsed ``BACKEND:MODEL[@TAG]`` string."""

    kind: str
    backend: str
    model: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}" + (f"@{self.tag}" if self.tag else "")


def register(kind: str, name: str) -> Callable[[Factory], Factory]:
    """Decorator: make ``factory(spec, store, **options)`` the builder of backend ``name`` of ``kind``."""

    def deco(factory: Factory) -> Factory:
        _FACTORIES[(kind, name)] = factory
        return factory

    return deco


def list_backends(kind: str | None = None) -> list[str]:
    """Names of the known backends (of one kind, or all as ``kind/name``)."""
    keys = sorted(_MODULES)
    if kind is None:
        return [f"{k}/{n}" for k, n in keys]
    return [n for k, n in keys if k == kind]


def parse_spec(kind: str, text: str) -> BackendSpec:
    """Parse ``BACKEND:MODEL[@TAG]``; a bad or unknown name raises InputError listing valid ones."""
    if kind not in KINDS:
        raise InputError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")
    backend, sep, rest = text.partition(":")
    if not sep or not rest:
        raise InputError(f"--{kind} {text!r}: expected BACKEND:MODEL[@TAG], e.g. {_example(kind)}")
    if (kind, backend) not in _MODULES:
        raise InputError(f"--{kind} {text!r}: unknown backend {backend!r}; available: {', '.join(list_backends(kind))}")
    model, _, tag = rest.partition("@")
    return BackendSpec(kind=kind, backend=backend, model=model, tag=tag or None)


def _example(kind: str) -> str:
    return {
        "scorer": "open_clip:ViT-B-32@openai",
        "generator": "hf:meta-llama/Meta-Llama-3.1-8B-Instruct",
        "captioner": "blip2:Salesforce/blip2-flan-t5-xl",
    }[kind]


def load_backend(kind: str, spec: str | BackendSpec, store: Any, **options: Any) -> Any:
    """Build the backend named by ``spec`` (e.g. ``open_clip:ViT-B-32@openai``) on ``store``.

    ``options`` are passed to the factory (device, dtype, sampling parameters, …).
    """
    parsed = spec if isinstance(spec, BackendSpec) else parse_spec(kind, spec)
    key = (parsed.kind, parsed.backend)
    if key not in _FACTORIES:
        try:
            importlib.import_module(_MODULES[key])
        except ImportError as exc:
            raise BackendError(f"backend {parsed} cannot be imported: {exc}") from exc
    return _FACTORIES[key](parsed, store, **options)
