"""``capstore run``, ``resume``, ``worker``, ``status`` and ``runs list``: the main job."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from capstore.backends.presets import MILS_SAMPLING
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


def _given_options(ctx: click.Context) -> set[str]:
    """The options set on the command line or by environment, not left at their defaults.

    Named as RunConfig fields (``pool_file`` → ``pool``), so the library can refuse an option the
    method does not use instead of ignoring it.
    """
    renamed = {"pool_file": "pool", "prompt_file": "prompt"}
    return {renamed.get(name, name) for name in ctx.params
            if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}


def _report(summary) -> None:  # type: ignore[no-untyped-def]
    """Print a work summary and exit as it ended: 130 after Ctrl-C, 1 if items failed, else 0."""
    click.echo(summary.describe())
    if summary.interrupted or summary.status == "interrupted":
        click.echo(f"interrupted: held items given back; continue with `capstore resume {summary.run_id}`")
        sys.exit(130)
    if summary.items_failed:
        click.echo(f"{summary.items_failed} of {summary.items_total} items failed; first error: "
                   f"{summary.first_error or 'none recorded'}", err=True)
        sys.exit(1)
    if summary.held_by_others:
        click.echo(f"{summary.held_by_others} items are still held by other workers "
                   f"(`capstore status {summary.run_id}`)")


def executor_options(func):  # type: ignore[no-untyped-def]
    """``--executor`` and the Ray options, shared by ``run`` and ``worker``."""
    for option in reversed((
        click.option("--executor", default="local", show_default=True,
                     help="local (this process) or ray (N actors; pip install 'capstore[ray]')."),
        click.option("--workers", type=int, default=None, help="Ray: actors to start (default 1)."),
        click.option("--ray-address", default=None,
                     help="Ray: auto, HOST:PORT or ray://HOST:10001 (default: start a local Ray)."),
        click.option("--gpus-per-worker", type=float, default=None,
                     help="Ray: GPUs per actor (default 1 where the cluster has GPUs and --device is not cpu)."),
        click.option("--cpus-per-worker", type=float, default=None, help="Ray: CPUs per actor (default 1)."),
        click.option("--max-restarts", type=int, default=None, help="Ray: restarts of a dead actor (default 1)."),
    )):
        func = option(func)
    return func


def _executor(executor: str, workers: int | None, ray_address: str | None, gpus_per_worker: float | None,
              cpus_per_worker: float | None, max_restarts: int | None):  # type: ignore[no-untyped-def]
    from capstore.runs.executors import ExecutorOptions

    return ExecutorOptions(executor, workers, ray_address, gpus_per_worker, cpus_per_worker, max_restarts)


def _report_execution(execution, must_finish: bool) -> None:  # type: ignore[no-untyped-def]
    """``_report``, after the executor's notes; exits 1 when the run was to finish and did not (actors lost)."""
    for note in execution.notes:
        click.echo(note, err=True)
    summary = execution.summary
    if must_finish and not summary.interrupted and summary.status not in ("done", "failed"):
        click.echo(summary.describe())
        click.echo(f"run {summary.run_id} did not finish ({summary.items_total - summary.items_done - summary.items_failed} "
                   f"items open); continue with `capstore worker {summary.run_id}` or `capstore resume {summary.run_id}`",
                   err=True)
        sys.exit(1)
    _report(summary)


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
@click.option("--max-new-tokens", type=int, default=None,
              help=f"Generation length limit (MILS's generator: {MILS_SAMPLING['max_new_tokens']:,}).")
@click.option("--temperature", type=float, default=None, help="Generator temperature (MILS: 0.5).")
@click.option("--top-p", type=float, default=None, help="Generator top-p (MILS: 0.9).")
@click.option("--base-url", default=None, help="OpenAI-compatible server for openai backends.")
@click.option("--device", default="auto", show_default=True,
              help="auto (a GPU if any; several: spread over them), cpu, cuda or cuda:N.")
@click.option("--dtype", default=None,
              help="auto, float32, float16 or bfloat16 for every backend (auto: MILS's on CUDA, float32 on CPU).")
@click.option("--scorer-dtype", default=None, help="MILS's scorer dtype (auto: float32, as MILS).")
@click.option("--generator-dtype", default=None,
              help="MILS's generator dtype (auto: bfloat16 on CUDA, float16 on GPUs without it, as MILS).")
@click.option("--batch-images", type=int, default=16, show_default=True, help="Images claimed and batched together.")
@click.option("--decoding", default=None,
              help="BLIP-2/LLaVA decoding preset: greedy (default: HF zero-shot), lavis-coco (5 beams), sample.")
@click.option("--gpu-memory-utilization", type=float, default=None,
              help="vllm: generator: fraction of the GPU for vLLM (default: what is free less 2 GiB, at most 0.9).")
@click.option("--max-model-len", type=int, default=None, help="vllm: generator: context length (default 8192).")
@click.option("--tensor-parallel", type=int, default=None, help="vllm: generator: GPUs to shard the LLM over (default 1).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@executor_options
@db_option
def run(method: str, dataset: str, split: str | None, limit: int | None, seed: int, label: str | None,
        scorer: str | None, generator: str | None, captioner: str | None, pool_file: str | None, pool_size: str,
        prompt_file: str | None, iterations: int, keep: int, requested: int, early_stop: str | None,
        init_from: int | None, adapter: str | None, num_candidates: int, max_new_tokens: int | None, temperature: float | None,
        top_p: float | None, base_url: str | None, device: str, dtype: str | None, scorer_dtype: str | None,
        generator_dtype: str | None, batch_images: int, decoding: str | None, gpu_memory_utilization: float | None,
        max_model_len: int | None, tensor_parallel: int | None, quiet: bool, db: str | None, **executor: Any) -> None:
    """Create a run and work it to the end (prints the run id first).

    Example: capstore run --method blip2 --captioner blip2:Salesforce/blip2-flan-t5-xl --dataset coco
    """
    from capstore.runs import RunConfig, create_run
    from capstore.runs.config import default_generator_params
    from capstore.runs.executors import check_executor, execute
    from capstore.store import open_store

    given = _given_options(click.get_current_context())
    store = open_store(db)
    gen_params = default_generator_params()
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
                    device=device, dtype=dtype, scorer_dtype=scorer_dtype, generator_dtype=generator_dtype,
                    batch_images=batch_images, base_url=base_url, decoding=decoding,
                    gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                    tensor_parallel=tensor_parallel)
    options = _executor(**executor)
    check_executor(store, options)
    run_id = create_run(store, cfg, pool_file=pool_file, prompt_file=prompt_file, given=given)
    click.echo(f"run {run_id}")
    _report_execution(execute(store, run_id, options, progress=not quiet), must_finish=True)


@click.command()
@click.argument("run_id", type=int)
@click.option("--iterations", type=int, default=None, help="Extend a MILS run to this many iterations.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-wait", is_flag=True, help="Return when nothing is left to claim, even if other workers still hold items.")
@db_option
def resume(run_id: int, iterations: int | None, quiet: bool, no_wait: bool, db: str | None) -> None:
    """Continue a run where it stopped (frees leases of this host's dead workers).

    Exits 0 when the run is done, 1 if items failed, 130 after Ctrl-C.
    """
    from capstore.runs import extend_run, work
    from capstore.store import open_store

    store = open_store(db, create=False)
    if iterations is not None:
        extend_run(store, run_id, iterations)
    _report(work(store, run_id, progress=not quiet, resume=True, wait=not no_wait))


@click.command()
@click.argument("run_id", type=int)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-wait", is_flag=True, help="Return when nothing is left to claim, even if other workers still hold items.")
@executor_options
@db_option
def worker(run_id: int, quiet: bool, no_wait: bool, db: str | None, **executor: Any) -> None:
    """Join a run as one more worker (another process or machine on the same store).

    Works until the run is finished: when the rest is held by other workers it waits for them, and
    takes over the items of one that died once its lease runs out. With ``--executor ray
    --workers N``: N such workers as Ray actors. Exits 0 when the run is done, 1 if items failed
    or it did not finish (every actor lost), 130 after Ctrl-C.
    """
    from capstore.runs.executors import check_executor, execute
    from capstore.store import open_store

    store, options = open_store(db, create=False), _executor(**executor)
    check_executor(store, options)
    _report_execution(execute(store, run_id, options, progress=not quiet, wait=not no_wait), must_finish=not no_wait)


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
    """List or delete the runs of the store."""


@runs.command("list")
@db_option
def list_(db: str | None) -> None:
    """One line per run: id, method, dataset/split, status, created, items done."""
    from capstore.runs.status import list_runs
    from capstore.store import open_store

    for rid, method, where, state, created, done, total, label in list_runs(open_store(db, create=False)):
        click.echo(f"{rid}\t{method}\t{where}\t{state}\t{created}\t{done}/{total}\t{label or ''}")


@runs.command("delete")
@click.argument("run_ids", nargs=-1, type=int, required=True)
@click.option("--yes", is_flag=True, help="Really delete (without it nothing is deleted).")
@db_option
def delete(run_ids: tuple[int, ...], yes: bool, db: str | None) -> None:
    """Delete runs with all their rows (work items, candidates, captions, usage, errors, metrics), in one transaction.

    Texts, images, pools and caches other runs may use stay; `capstore gc` removes what nothing uses.
    """
    from capstore.errors import InputError
    from capstore.runs.cleanup import delete_runs
    from capstore.store import open_store

    store = open_store(db, create=False)
    if not yes:
        raise InputError(f"not deleting run(s) {', '.join(map(str, run_ids))} without --yes")
    counts = delete_runs(store, list(run_ids))
    click.echo(f"deleted run(s) {', '.join(map(str, sorted(set(run_ids))))}: "
               + ", ".join(f"{n} {table}" for table, n in counts.items() if n))
