"""placeholder: owned by one developer; replace."""

from __future__ import annotations

import click


@click.command("eval")
def eval_() -> None:
    """Compute BLEU, METEOR, ROUGE-L, CIDEr, SPICE and CLIPScore of a run."""
    raise click.ClickException("not built yet")  # placeholder: replaced by the module's owner
