"""One-line error messages: ``capstore.errors.first_line``, and loaders that report an exception without a message."""

from __future__ import annotations

from typing import Any

import pytest

from capstore.errors import BackendError, first_line


def test_first_line_is_the_first_non_empty_line_or_the_class_name() -> None:
    assert first_line(ValueError("bad frame\nat offset 3")) == "bad frame"
    assert first_line(ValueError("\n\n  late start  \nmore")) == "late start"
    assert first_line(OSError()) == "OSError" and first_line(RuntimeError("  \n ")) == "RuntimeError"
    assert first_line(ValueError("x" * 50), 10) == "x" * 10
    assert first_line(ValueError("bad\nframe"), named=True) == "ValueError: bad"
    assert first_line(KeyError(), named=True) == "KeyError"


@pytest.mark.parametrize("module, cls, loader", [("capstore.backends.scorers.xclip", "XClipScorer", "XCLIPModel"),
                                                 ("capstore.backends.scorers.clap", "ClapScorer", "ClapModel")])
def test_a_loader_failing_without_a_message_is_a_backend_error(module: str, cls: str, loader: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    transformers = pytest.importorskip("transformers")

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise OSError()  # str() is '': splitlines()[0] was an IndexError

    monkeypatch.setattr(getattr(transformers, loader), "from_pretrained", fail)
    scorer: Any = object.__new__(getattr(importlib.import_module(module), cls))
    scorer.spec, scorer.location, scorer.dtype_name = "x:model", "/nonexistent", "float32"
    with pytest.raises(BackendError, match=r"x:model: OSError$"):
        scorer._load_model()
