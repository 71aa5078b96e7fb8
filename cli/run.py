"""``capstore run``, ``resume``, ``worker``, ``status`` and ``runs list``: the main job."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.options import db_option


def _early_stop(value: str | None) -> tuple[int, float] | None:
    if not value:
        return None
    patience, _, eps = value.partition(":")
    try:
        return int(patience), float(eps or 0.0)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected PATIENCE[:EPS], e.g. 2:0.001", param_hint="--early-stop") from exc


def _pool_size(value: str) -> int | None:
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected a number or 'all'", param_hint="--pool-size") from exc


def _report(summary) -> None:  # type: ignore[no-untyped-def]
    click.echo(summary.describe())
    if summary.interrupted or summary.status == "interrupted":
        click.echo(f"interrupted: continue with `capstore resume {summary.run_id}`")


@click.command()
@click.option("--method", required=True, help="mils, blip2, llava or openai.")
@click.option("--dataset", default="demo", show_default=True, help="Dataset name.")
@click.option("--split", default=None, help="Split (default: the dataset's only split).")
@click.option("--limit", type=int, default=None, help="Only the first N items (by external id).")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed (sampling seeds derive from it).")
@click.option("--label", default=None, help="A name for the run in reports.")
@click.option("--scorer", default=None, help="Scorer, e.g. open_clip:ViT-SO400M-14-SigLIP@webli (MILS's).")
@click.option("--generator", default=None, help="Generator, e.g. hf:meta-llama/Meta-Llama-3.1-8B-Instruct.")
@click.option("--captioner", default=None, help="Captioner for baselines, e.g. blip2:Salesforce/blip2-flan-t5-xl.")
@click.option("--pool", "pool_file", default=None, help="Initial description pool, one per line (MILS).")
@click.option("--pool-size", default="all", show_default=True, help="Subsample N pool lines (seed 0), or all.")
@click.option("--prompt", "prompt_file", default=None, help="Generator prompt with {descriptions} and {requested_number}.")
@click.option("--iterations", type=int, default=10, show_default=True)
@click.option("--keep", type=int, default=50, show_default=True, help="Candidates kept per iteration.")
@click.option("--requested", type=int, default=50, show_default=True, help="Candidates asked of the generator.")
@click.option("--early-stop", default=None, help="PATIENCE[:EPS]: stop an image when its best score stalls.")
@click.option("--init-from", type=int, default=None, help="Seed each image's pool with another run's outputs.")
@click.option("--adapter", default=None, type=click.Path(exists=True, file_okay=False), help="LLaVA: a PEFT adapter folder loaded on top (fine-tuned variants).")
@click.option("--num-candidates", type=int, default=1, show_default=True, help="Baselines: captions sampled per image.")
@click.option("--max-new-tokens", type=int, default=None, help="Generation length limit.")
@click.option("--temperature", type=float, default=None, help="Generator temperature (MILS: 0.5).")
@click.option("--top-p", type=float, default=None, help="Generator top-p (MILS: 0.9).")
@click.option("--base-url", default=None, help="OpenAI-compatible server for openai backends.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", default=None, help="auto, float32, float16 or bfloat16.")
@click.option("--batch-images", type=int, default=16, show_default=True, help="Images claimed and batched together.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@db_option
def run(method: str, dataset: str, split: str | None, limit: int | None, seed: int, label: str | None,
        scorer: str | None, generator: str | None, captioner: str | None, pool_file: str | None, pool_size: str,
        prompt_file: str | None, iterations: int, keep: int, requested: int, early_stop: str | None,
        init_from: int | None, adapter: str | None, num_candidates: int, max_new_tokens: int | None, temperature: float | None,
        top_p: float | None, base_url: str | None, device: str, dtype: str | None, batch_images: int,
        quiet: bool, db: str | None) -> None:
    """Create a run and work it to the end (prints the run id first).

    Example: capstore run --method blip2 --captioner blip2:Salesforce/blip2-flan-t5-xl --dataset coco
    """
    from capstore.runs import RunConfig, create_run, work
    from capstore.store import open_store

    store = open_store(db)
    gen_params = {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 512}
    cap_params: dict[str, object] = {}
    for key, value in (("temperature", temperature), ("top_p", top_p), ("max_new_tokens", max_new_tokens)):
        if value is not None:
            gen_params[key] = value
            cap_params[key] = value
    if adapter is not None:
        cap_params["adapter"] = str(Path(adapter).resolve())
    cfg = RunConfig(method=method, dataset=dataset, split=split, limit=limit, seed=seed, label=label, scorer=scorer,
                    generator=generator, captioner=captioner, pool_size=_pool_size(pool_size), iterations=iterations,
                    keep=keep, requested=requested, early_stop=_early_stop(early_stop), init_from=init_from,
                    num_candidates=num_candidates, generator_params=gen_params, captioner_params=cap_params,
                    device=device, dtype=dtype, batch_images=batch_images, base_url=base_url)
    run_id = create_run(store, cfg, pool_file=pool_file, prompt_file=prompt_file)
    click.echo(f"run {run_id}")
    _report(work(store, run_id, progress=not quiet))


@click.command()
@click.argument("run_id", type=int)
@click.option("--iterations", type=int, default=None, help="Extend a MILS run to this many iterations.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@db_option
def resume(run_id: int, iterations: int | None, quiet: bool, db: str | None) -> None:
    """Continue a run where it stopped (frees leases of this host's dead workers)."""
    from capstore.runs import extend_run, work
    from capstore.store import open_store

    store = open_store(db, create=False)
    if iterations is not None:
        extend_run(store, run_id, iterations)
    _report(work(store, run_id, progress=not quiet, resume=True))


@click.command()
@click.argument("run_id", type=int)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@db_option
def worker(run_id: int, quiet: bool, db: str | None) -> None:
    """Join a run as one more worker (another process or machine on the same store)."""
    from capstore.runs import work
    from capstore.store import open_store

    _report(work(open_store(db, create=False), run_id, progress=not quiet))


@click.command()
@click.argument("run_id", type=int)
@db_option
def status(run_id: int, db: str | None) -> None:
    """Show a run's progress, device-seconds so far and ETA."""
    from capstore.runs.status import run_status
    from capstore.store import open_store

    click.echo(run_status(open_store(db, create=False), run_id).describe())


@click.group()
def runs() -> None:
    """List the runs of the store."""


@runs.command("list")
@db_option
def list_(db: str | None) -> None:
    """One line per run: id, method, dataset/split, status, created, items done."""
    from capstore.runs.status import list_runs
    from capstore.store import open_store

    for rid, method, where, state, created, done, total, label in list_runs(open_store(db)):
        click.echo(f"{rid}\t{method}\t{where}\t{state}\t{created}\t{done}/{total}\t{label or ''}")
