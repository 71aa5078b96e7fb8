"""The demo: the cost study in miniature, end to end on a fresh machine, with nothing downloaded.

Steps, each reusing what an earlier demo on the same store did: train (once, cached under
``workdir/models``) small models that know the demo's drawn world (``capstore.demo_models``), draw
the demo dataset, run MILS (the trained CLIP scores, the trained Llama recombines the best
phrases), the BLIP-2 and LLaVA baselines, and a hybrid (MILS started from BLIP-2's captions, with
early stop), evaluate the four runs and write the report. A run is found again by its config
hash: a second demo trains nothing, makes no model call and says so; a demo killed half-way
resumes its unfinished run instead of starting a new one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import func, select

from capstore.backends.loading_bars import silence_loading_bars
from capstore.datasets import find_split, make_demo
from capstore.demo_models import DemoModels, build_demo_models
from capstore.demo_models.llm import PARAMS as LLM_PARAMS
from capstore.methods.demo_assets import write_demo_assets
from capstore.runs import RunConfig, WorkSummary, create_run, work
from capstore.runs.create import prepare_config
from capstore.store.engine import Store
from capstore.store.schema import IterationState, Run, UsageEvent, WorkItem

DEMO_DATASET = "demo"
# MILS's own settings are 10 iterations, 50 kept, 50 asked for; the demo's Llama was taught to
# answer prompts of this many kept lines with this many new ones.
MILS_ITERATIONS, MILS_KEEP, MILS_REQUESTED = 5, LLM_PARAMS["keep"], LLM_PARAMS["requested"]
HYBRID_EARLY_STOP = (1, 0.0)  # stop an image at the first iteration that does not raise its best score
MAX_NEW_TOKENS = 80  # the taught Llama's answer (five numbered lines) is about 55 tokens
CAPTION_TOKENS = 24
BATCH_IMAGES = 24  # the whole demo set in one batch (and one generator call per iteration)


@dataclass
class DemoResult:
    """What the demo did: its runs (label -> summary), their corpus metrics, MILS curves, the report.

    ``model_calls_now`` and ``training_steps`` count this invocation only (0 and 0 on a rerun);
    each summary's ``model_calls`` is its run's total.
    """

    models: DemoModels | None = None
    runs: dict[str, WorkSummary] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    report: Path | None = None
    model_calls_now: int = 0
    training_steps: int = 0


def run_configs(models: DemoModels, blip2_run: int | None = None) -> dict[str, RunConfig]:
    """The demo's runs on the trained models; the hybrid (MILS from BLIP-2's captions) needs the BLIP-2 run."""
    specs = models.specs
    mils = {"method": "mils", "dataset": DEMO_DATASET, "scorer": specs["scorer"], "generator": specs["generator"],
            "iterations": MILS_ITERATIONS, "keep": MILS_KEEP, "requested": MILS_REQUESTED, "batch_images": BATCH_IMAGES,
            "generator_params": {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": MAX_NEW_TOKENS,
                                 "batch_size": BATCH_IMAGES}}
    captioner = {"dataset": DEMO_DATASET, "captioner_params": {"max_new_tokens": CAPTION_TOKENS},
                 "batch_images": BATCH_IMAGES}
    configs = {
        "demo-mils": RunConfig(label="demo-mils", **mils),  # type: ignore[arg-type]
        "demo-blip2": RunConfig(method="blip2", label="demo-blip2", captioner=specs["blip2"], **captioner),
        "demo-llava": RunConfig(method="llava", label="demo-llava", captioner=specs["llava"], **captioner),
    }
    if blip2_run is not None:
        configs["demo-hybrid"] = RunConfig(label="demo-hybrid", init_from=blip2_run, early_stop=HYBRID_EARLY_STOP,
                                           **mils)  # type: ignore[arg-type]
    return configs


def run_demo(store: Store, workdir: str | Path, *, progress: bool = True, evaluate: bool = True,
             report: bool = True, log: Callable[[str], Any] = print) -> DemoResult:
    """Run the whole demo on ``store``, keeping models, assets and the report under ``workdir``."""
    workdir = Path(workdir).resolve()
    if not progress:
        silence_loading_bars()
    calls_before = _store_calls(store)
    result = DemoResult()
    result.models = build_demo_models(workdir / "models", log=log)
    result.training_steps = result.models.steps
    log(f"demo models: {workdir / 'models'} (recipe {result.models.fingerprint()})")
    log(f"dataset {make_demo(store).describe()}")
    pool, prompt = write_demo_assets(workdir / "assets")
    files = {"pool_file": str(pool), "prompt_file": str(prompt)}
    for label in ("demo-mils", "demo-blip2", "demo-llava", "demo-hybrid"):
        blip2 = result.runs["demo-blip2"].run_id if "demo-blip2" in result.runs else None
        cfg = run_configs(result.models, blip2)[label]
        run_id = _find_or_create(store, cfg, **(files if cfg.method == "mils" else {}))
        started = time.perf_counter()
        result.runs[label] = _finished(store, run_id) or work(store, run_id, progress=progress, resume=True)
        log(f"{label}: {describe(result.runs[label])} ({time.perf_counter() - started:.1f} s)")
    result.curves = mils_curves(store, {label: s.run_id for label, s in result.runs.items()})
    if evaluate:
        started = time.perf_counter()
        computed = _evaluate(store, result, progress)
        log(f"evaluated {len(result.runs)} runs in {time.perf_counter() - started:.1f} s "
            f"({'computed now: ' + ', '.join(computed) if computed else 'all values from the store'})")
    if report:
        from capstore.analysis.report import write_report

        ids = [s.run_id for s in result.runs.values()]
        result.report = write_report(store, ids, workdir / "report", about=about_demo(result.models))
        log(f"report: {result.report}")
    result.model_calls_now = _store_calls(store) - calls_before
    return result


def describe(summary: WorkSummary) -> str:
    """One line of a run: status, items, what this invocation committed, and the run's totals."""
    failed = f", {summary.items_failed} failed" if summary.items_failed else ""
    return (f"run {summary.run_id}: {summary.status}; {summary.items_done}/{summary.items_total} items done{failed}; "
            f"{summary.steps} steps committed now; run totals: {summary.model_calls} model calls, "
            f"{summary.cached_requests} requests served from caches")


def about_demo(models: DemoModels) -> str:
    """What the report says about where its numbers come from."""
    names = ", ".join(f"{name} `{t.path.name}`" for name, t in models.models.items())
    return ("These runs are capstore's demo: small models trained on CPU in seconds by capstore itself "
            f"(recipe fingerprint `{models.fingerprint()}`: {names}), on 24 pictures that capstore draws "
            "(coloured circles, squares and triangles over five backgrounds) with references written from what "
            "was drawn. The numbers are about that drawn world, not COCO: they show how the study is measured "
            "(MILS climbing over iterations at a cost, single-pass captioners cheap), not what the real models "
            "score. Costs are CPU time, priced at $0.")


def mils_curves(store: Store, runs: dict[str, int]) -> dict[str, list[tuple[int, float]]]:
    """Mean best scorer score per iteration of each MILS run among ``runs`` (label -> [(iteration, mean)])."""
    out: dict[str, list[tuple[int, float]]] = {}
    with store.read() as s:
        for label, run_id in runs.items():
            rows = s.execute(select(IterationState.iteration, func.avg(IterationState.best_score))
                             .where(IterationState.run_id == run_id).group_by(IterationState.iteration)
                             .order_by(IterationState.iteration)).all()
            if rows and s.get(Run, run_id).method == "mils":
                out[label] = [(int(it), float(v)) for it, v in rows]
    return out


def _find_or_create(store: Store, cfg: RunConfig, **files: str) -> int:
    """The newest run with this exact config (finished or not), else a new one."""
    cfg = prepare_config(store, cfg, **files)
    with store.read() as s:
        cfg.split = find_split(s, cfg.dataset, cfg.split).name  # as create_run records it, so hashes match
        found = s.scalar(select(Run.id).where(Run.config_hash == cfg.hash(), Run.label == cfg.label)
                         .order_by(Run.id.desc()).limit(1))
    return int(found) if found is not None else create_run(store, cfg, **files)


def _finished(store: Store, run_id: int) -> WorkSummary | None:
    """A finished run's summary read from the store (no worker, no bar, nothing written), else None."""
    with store.read() as s:
        run = s.get(Run, run_id)
        counts = dict(s.execute(select(WorkItem.status, func.count()).where(WorkItem.run_id == run_id)
                                .group_by(WorkItem.status)).all())
        if run is None or run.status != "done" or counts.get("pending", 0) + counts.get("leased", 0):
            return None
        calls, cached = s.execute(select(func.coalesce(func.sum(UsageEvent.calls), 0),
                                         func.coalesce(func.sum(UsageEvent.cached), 0))
                                  .where(UsageEvent.run_id == run_id)).one()
    return WorkSummary(run_id=run_id, status=run.status, items_total=sum(counts.values()),
                       items_done=counts.get("done", 0), items_failed=counts.get("failed", 0), steps=0,
                       model_calls=int(calls), cached_requests=int(cached))


def _store_calls(store: Store) -> int:
    with store.read() as s:
        return int(s.scalar(select(func.coalesce(func.sum(UsageEvent.calls), 0))))


def _evaluate(store: Store, result: DemoResult, progress: bool) -> list[str]:
    """Evaluate every run (candidates too for MILS runs); returns what was computed now (not from the store)."""
    from capstore.metrics import evaluate_run

    assert result.models is not None
    computed: list[str] = []
    for label, summary in result.runs.items():
        ev = evaluate_run(store, summary.run_id, candidates=label in result.curves,
                          clip_scorer=result.models.specs["scorer"], progress=progress)
        result.metrics[label] = dict(ev.corpus)
        result.unavailable.update(ev.unavailable)
        computed += [m for m in ev.computed if m not in computed]
    return computed
