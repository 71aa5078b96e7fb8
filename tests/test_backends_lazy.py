"""Backends are cheap to build and load their weights only on a cache miss: a rerun loads no model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from capstore.backends.registry import load_backend
from capstore.cli.main import cli
from capstore.errors import BackendError
from tests.conftest import REPO, demo_images
from tests.run_helpers import mils_args

HEAVY = ("torch", "transformers", "open_clip")


def _args(tmp_path: Path, tiny_models) -> list[str]:  # type: ignore[no-untyped-def]
    return mils_args(tmp_path, tiny_models.specs["scorer"], generator=tiny_models.specs["generator"], iterations=1,
                     extra=("--limit", "2", "--max-new-tokens", "16", "--device", "cpu"))


def _no_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every weight-loading entry point record its call and fail."""
    import open_clip
    import torch
    import transformers

    calls: list[str] = []

    def refuse(name: str):  # type: ignore[no-untyped-def]
        def spy(*_a, **_k):  # type: ignore[no-untyped-def]
            calls.append(name)
            raise AssertionError(f"{name} called")
        return spy

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse("create_model_and_transforms"))
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.AutoProcessor):
        monkeypatch.setattr(cls, "from_pretrained", refuse(f"{cls.__name__}.from_pretrained"))
    real_init = torch.nn.Module.__init__

    def module_init(self, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(f"torch module {type(self).__name__}")
        real_init(self, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "__init__", module_init)
    return calls


def test_rerun_of_an_identical_mils_run_loads_no_model(demo_store, tiny_models, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(demo_store.url).replace("sqlite:///", "")
    first = CliRunner().invoke(cli, [*_args(tmp_path, tiny_models), "--db", db])
    assert first.exit_code == 0 and "model calls" in first.output, first.output
    calls = _no_loading(monkeypatch)
    second = CliRunner().invoke(cli, [*_args(tmp_path, tiny_models), "--db", db])
    assert second.exit_code == 0, second.output
    assert "made 0 model calls: everything came from the caches" in second.output
    assert calls == []


def test_rerun_in_a_fresh_process_imports_no_torch(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = str(demo_store.url).replace("sqlite:///", "")
    args = [*_args(tmp_path, tiny_models), "--db", db]
    assert CliRunner().invoke(cli, args).exit_code == 0
    script = ("import json, sys\nfrom capstore.cli.main import cli\n"
              "try:\n    cli(json.loads(sys.argv[1]), standalone_mode=False)\nfinally:\n"
              f"    print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "made 0 model calls" in done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_backends_build_without_loading_and_load_on_the_first_miss(demo_store, tiny_models,  # type: ignore[no-untyped-def]
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    generator = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu", max_new_tokens=4)
    captioner = load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu", max_new_tokens=4)
    assert scorer._loaded is None and generator._loaded is None and captioner._loaded is None
    image = demo_images(demo_store, 1)
    scorer.encode_images(image)
    generator.generate(["hello"], [1])
    captioner.caption(image, [0])
    assert scorer._loaded and generator._loaded and captioner._loaded  # each loaded by its first miss
    calls = _no_loading(monkeypatch)
    again = [load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu"),
             load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu", max_new_tokens=4),
             load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu", max_new_tokens=4)]
    again[0].encode_images(image)
    assert again[1].generate(["hello"], [1])[0].cached and again[2].caption(image, [0])[0].cached
    assert calls == [] and all(b._loaded is None for b in again)


def test_weights_that_cannot_load_fail_on_first_use_in_one_line(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    broken = tmp_path / "clip"
    shutil.copytree(tiny_models.clip, broken)
    (broken / "open_clip_model.safetensors").write_bytes(b"not weights")
    scorer = load_backend("scorer", f"open_clip:{broken}", demo_store, device="cpu")  # cheap: nothing read yet
    with pytest.raises(BackendError, match=f"^cannot load open_clip model open_clip:{broken}: "):
        scorer.encode_texts(["a new text no cache has"])
