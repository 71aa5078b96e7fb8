"""``capstore slurm``: an sbatch job array whose tasks each run ``capstore worker RUN``."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.options import db_option


@click.command()
@click.argument("run_id", type=int)
@click.option("--array", "array", type=int, required=True, help="Tasks in the job array (each one worker).")
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs per task (0: none).")
@click.option("--time", "time_limit", default="4:00:00", show_default=True, help="Time limit per task (SLURM's --time).")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the script here (default: stdout).")
@db_option
def slurm(run_id: int, array: int, gpus: int, time_limit: str, partition: str | None, out: str | None,
          db: str | None) -> None:
    """Write an sbatch script: a job array of --array tasks, each `capstore worker RUN` on the store.

    Needs a PostgreSQL store (tasks run on several nodes). Example:
    capstore slurm 7 --array 8 --gpus 1 --time 4:00:00 --partition gpu --out run7.sbatch && sbatch run7.sbatch
    """
    from capstore.runs.slurm import slurm_script
    from capstore.store import open_store

    script = slurm_script(open_store(db, create=False), run_id, array, gpus, time_limit, partition)
    if out is None:
        click.echo(script, nl=False)
        return
    Path(out).write_text(script, encoding="utf-8")
    click.echo(f"wrote {out}: submit it with `sbatch {out}`")
