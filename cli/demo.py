"""``capstore demo``: the main job end to end on the embedded default (what the README runs first)."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.options import db_option

_COLUMNS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "CLIPScore", "RefCLIPScore")


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("capstore-data"), show_default=True,
              help="Where the tiny models, the demo's pool and prompt, and the report go.")
@click.option("--no-eval", is_flag=True, help="Skip evaluation and the report.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@db_option
def demo(workdir: Path, no_eval: bool, quiet: bool, db: str | None) -> None:
    """Build tiny models, make the demo dataset, run MILS and baselines, evaluate, report.

    Nothing is downloaded. A second demo on the same store reuses every run (zero model calls);
    an interrupted one resumes.

    Example: capstore --db capstore.db demo
    """
    from capstore.demo import run_demo
    from capstore.store import open_store

    result = run_demo(open_store(db), workdir, progress=not quiet, evaluate=not no_eval, report=not no_eval,
                      log=click.echo)
    if result.metrics:
        click.echo("\n" + "\t".join(("run", *_COLUMNS)))
        for label, values in result.metrics.items():
            click.echo("\t".join((label, *(f"{values[m]:.4f}" if m in values else "-" for m in _COLUMNS))))
    for metric, why in result.unavailable.items():
        click.echo(f"{metric} unavailable: {why}")
