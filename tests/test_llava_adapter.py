"""LLaVA with a PEFT adapter: loaded through `capstore run --adapter`, and a model of its own."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from capstore.cli.main import cli
from capstore.store.schema import Model, Run, UsageEvent


def _make_adapter(llava_dir: Path, out: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights, so that it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(1)
    base = LlavaForConditionalGeneration.from_pretrained(llava_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(out)
    return out


def _run(db: str, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["run", "--method", "llava", "--limit", "3", "--max-new-tokens", "6",
                                      "--device", "cpu", "--quiet", "--db", db, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_adapter_is_loaded_and_is_a_model_of_its_own(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    adapter = _make_adapter(tiny_models.llava, tmp_path / "adapter")
    _run(db, "--captioner", tiny_models.specs["llava"])
    out = _run(db, "--captioner", tiny_models.specs["llava"], "--adapter", str(adapter))
    assert "3/3 items done" in out
    # The base run's cache must not serve the adapted model: it made calls of its own.
    assert "made 0 model calls" not in out
    with demo_store.read() as s:
        runs = s.scalars(select(Run).order_by(Run.id)).all()
        assert runs[1].config["captioner_params"]["adapter"] == str(adapter.resolve())
        assert runs[0].config_hash != runs[1].config_hash
        used = {r: s.scalars(select(UsageEvent.model_id).where(UsageEvent.run_id == r.id, UsageEvent.stage == "caption")).first()
                for r in runs}
        models = {m.id: m for m in s.scalars(select(Model))}
    base, adapted = models[used[runs[0]]], models[used[runs[1]]]
    assert base.id != adapted.id and base.fingerprint != adapted.fingerprint
    assert str(adapter) in adapted.name


def test_missing_adapter_folder_is_one_line(demo_store, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = demo_store.url.replace("sqlite:///", "")
    result = CliRunner().invoke(cli, ["run", "--method", "llava", "--captioner", tiny_models.specs["llava"],
                                      "--adapter", str(tmp_path / "nope"), "--db", db])
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
