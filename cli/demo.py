"""``capstore demo``: the cost study in miniature on the embedded default (what the README runs first)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from capstore.cli.options import db_option

_COLUMNS = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "CLIPScore")


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("capstore-data"), show_default=True,
              help="Where the trained demo models, the demo's pool and prompt, and the report go.")
@click.option("--no-eval", is_flag=True, help="Skip evaluation and the report.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@db_option
def demo(workdir: Path, no_eval: bool, quiet: bool, db: str | None) -> None:
    """Train small models of the drawn world (once), run MILS, BLIP-2, LLaVA and a hybrid, evaluate, report.

    Nothing is downloaded. A second demo on the same store reuses the models and every run
    (zero training steps, zero model calls); an interrupted one resumes.

    Example: capstore --db capstore.db demo
    """
    from capstore.demo import run_demo
    from capstore.store import open_store

    result = run_demo(open_store(db), workdir, progress=not quiet, evaluate=not no_eval, report=not no_eval,
                      log=click.echo)
    for label, curve in result.curves.items():
        click.echo(f"{label} mean best score by iteration: " + " -> ".join(f"{v:.4f}" for _, v in curve))
    if result.metrics:
        click.echo("\n" + "\t".join(("run", *_COLUMNS)))
        for label, values in result.metrics.items():
            click.echo("\t".join((label, *(f"{values[m]:.4f}" if m in values else "-" for m in _COLUMNS))))
    for metric, why in result.unavailable.items():
        if metric in _COLUMNS:
            click.echo(f"{metric} unavailable: {why}")
    click.echo(f"this invocation: {result.model_calls_now} model calls, {result.training_steps} training steps "
               f"(the runs' totals: {sum(s.model_calls for s in result.runs.values())} model calls)")
    where = f"--db {shlex.quote(db)} " if db else ""
    click.echo(f"next: capstore {where}serve --open   (the runs, items and MILS trajectories in a browser)")
