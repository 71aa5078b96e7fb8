"""Unnamed backends default to the documented real models of each method."""

from __future__ import annotations

from pathlib import Path

import pytest

from capstore.methods.demo_assets import write_demo_assets
from capstore.runs import RunConfig
from capstore.runs.create import prepare_config


def test_mils_defaults_to_siglip_and_llama(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pool, prompt = write_demo_assets(tmp_path)
    cfg = prepare_config(demo_store, RunConfig(method="mils", dataset="demo"), str(pool), str(prompt))
    assert cfg.scorer == "open_clip:ViT-SO400M-14-SigLIP@webli"
    assert cfg.generator == "hf:meta-llama/Meta-Llama-3.1-8B-Instruct"
    assert cfg.captioner is None


@pytest.mark.parametrize("method, expected", [("blip2", "blip2:Salesforce/blip2-flan-t5-xl"),
                                              ("llava", "llava:llava-hf/llava-1.5-7b-hf"),
                                              ("openai", "openai:gpt-4o")])
def test_baselines_default_to_the_cost_study_models(demo_store, method: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    cfg = prepare_config(demo_store, RunConfig(method=method, dataset="demo"))
    assert cfg.captioner == expected and cfg.scorer is None


def test_a_named_backend_wins_over_the_default(demo_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = prepare_config(demo_store, RunConfig(method="blip2", dataset="demo", captioner="blip2:/my/blip2"))
    assert cfg.captioner == "blip2:/my/blip2"


def test_hub_name_fingerprints_its_cached_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub name whose weights sit in the local HF cache is identified by their bytes, not its name."""
    from capstore.backends.models import weights_sha

    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"v1")
    import huggingface_hub.constants

    # The constant is read from the environment when huggingface_hub is first imported.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("abc")
    first = weights_sha("acme/tiny")
    assert first != weights_sha("acme/not-cached")  # falls back to the name
    (snapshot / "model.safetensors").write_bytes(b"v2-longer")  # same name, other weights
    assert weights_sha("acme/tiny") != first
