"""Prices are seeded by migration and editable; `capstore models tiny` builds loadable models."""

from __future__ import annotations

from click.testing import CliRunner

from capstore.cli.main import cli
from capstore.prices import list_prices
from capstore.store import open_store


def test_seeded_prices_and_set(db_url: str) -> None:
    store = open_store(db_url)
    seeded = {(p.kind, p.key): p.usd for p in list_prices(store)}
    assert abs(seeded[("device_hour", "*")] - 291.66 / 116) < 1e-9
    assert abs(seeded[("device_hour", "NVIDIA A10G")] - 0.65 / (31 / 60)) < 1e-9
    assert abs(seeded[("image", "gpt-4-vision-preview")] * 5000 - 5.41) < 1e-9
    runner = CliRunner()
    ok = runner.invoke(cli, ["prices", "set", "device_hour", "NVIDIA A10G", "1.5", "--db", db_url])
    assert ok.exit_code == 0
    assert "NVIDIA A10G\t$1.5" in runner.invoke(cli, ["prices", "list", "--db", db_url]).output
    bad = runner.invoke(cli, ["prices", "set", "per_hour", "x", "1", "--db", db_url])
    assert bad.exit_code == 2 and "unknown price kind 'per_hour'" in bad.output
    store.dispose()


def test_models_tiny_cli_is_idempotent(tiny_models) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, ["models", "tiny", str(tiny_models.root)])
    assert result.exit_code == 0 and f"scorer\topen_clip:{tiny_models.clip}" in result.output
