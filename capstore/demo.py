"""The demo: capstore's main job end to end on a fresh machine, with nothing downloaded.

Steps, each reusing what an earlier demo on the same store already did: build the tiny offline
models, draw the demo dataset, run MILS (tiny CLIP scorer + tiny Llama generator over a pool the
demo writes itself; the Llama is first taught for a few seconds to answer in MILS's numbered-line
shape, see ``backends/tiny_teach.py``, so that the loop really generates, scores and keeps) and
the BLIP-2 and LLaVA baselines (tiny models), evaluate the three runs and
write the report. A run is found again by its config hash, so a second demo makes no model call,
and a demo killed half-way resumes its unfinished run instead of starting a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

from capstore.backends.loading_bars import silence_loading_bars
from capstore.backends.tiny import TinyModels, build_tiny_models
from capstore.datasets import find_split, make_demo
from capstore.backends.tiny_teach import teach_llm
from capstore.methods.demo_assets import DEMO_PROMPT, demo_pool_lines, write_demo_assets
from capstore.runs import RunConfig, WorkSummary, create_run, work
from capstore.runs.create import prepare_config
from capstore.store.engine import Store
from capstore.store.schema import Run

DEMO_DATASET = "demo"
# Small enough for a few minutes on 2 CPU cores; MILS's own settings are 10 / 50 / 50.
MILS_ITERATIONS, MILS_KEEP, MILS_REQUESTED = 3, 10, 10
MAX_NEW_TOKENS = 128  # about six numbered lines of the taught tiny Llama
TEACH_STEPS = 150


@dataclass
class DemoResult:
    """What the demo did: its runs (label -> summary), their corpus metrics, the report's path."""

    runs: dict[str, WorkSummary] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    report: Path | None = None


def demo_configs(models: TinyModels, generator: str) -> dict[str, RunConfig]:
    """The demo's three runs: MILS (with ``generator``) and the BLIP-2 and LLaVA baselines, on the tiny models."""
    gen = {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": MAX_NEW_TOKENS}
    cap = {"max_new_tokens": 20}
    return {
        "demo-mils": RunConfig(method="mils", dataset=DEMO_DATASET, label="demo-mils", scorer=models.specs["scorer"],
                               generator=generator, iterations=MILS_ITERATIONS, keep=MILS_KEEP,
                               requested=MILS_REQUESTED, generator_params=gen, batch_images=24),
        "demo-blip2": RunConfig(method="blip2", dataset=DEMO_DATASET, label="demo-blip2",
                                captioner=models.specs["blip2"], captioner_params=cap, batch_images=24),
        "demo-llava": RunConfig(method="llava", dataset=DEMO_DATASET, label="demo-llava",
                                captioner=models.specs["llava"], captioner_params=cap, batch_images=24),
    }


def run_demo(store: Store, workdir: str | Path, *, progress: bool = True, evaluate: bool = True,
             report: bool = True, log: Callable[[str], Any] = print) -> DemoResult:
    """Run the whole demo on ``store``, keeping models, assets and the report under ``workdir``."""
    workdir = Path(workdir).resolve()
    if not progress:
        silence_loading_bars()
    log(f"tiny models: {workdir / 'models'}")
    models = build_tiny_models(workdir / "models")
    summary = make_demo(store)
    log(f"dataset {summary.describe()}")
    pool, prompt = write_demo_assets(workdir / "assets")
    log("teaching the tiny Llama MILS's answer shape (a few seconds, once)")
    taught = teach_llm(models.llm, workdir / "models" / "llm-mils-demo", demo_pool_lines(), DEMO_PROMPT,
                       steps=TEACH_STEPS)
    result = DemoResult()
    for label, cfg in demo_configs(models, f"hf:{taught}").items():
        files = {"pool_file": str(pool), "prompt_file": str(prompt)} if cfg.method == "mils" else {}
        run_id = _find_or_create(store, cfg, **files)
        result.runs[label] = work(store, run_id, progress=progress, resume=True)
        log(result.runs[label].describe())
    if evaluate:
        _evaluate(store, models, result, progress, log)
    if report:
        from capstore.analysis.report import write_report

        result.report = write_report(store, [s.run_id for s in result.runs.values()], workdir / "report")
        log(f"report: {result.report}")
    return result


def _find_or_create(store: Store, cfg: RunConfig, **files: str) -> int:
    """The newest run with this exact config (finished or not), else a new one."""
    cfg = prepare_config(store, cfg, **files)
    with store.read() as s:
        cfg.split = find_split(s, cfg.dataset, cfg.split).name  # as create_run records it, so hashes match
        found = s.scalar(select(Run.id).where(Run.config_hash == cfg.hash(), Run.label == cfg.label)
                         .order_by(Run.id.desc()).limit(1))
    return int(found) if found is not None else create_run(store, cfg)


def _evaluate(store: Store, models: TinyModels, result: DemoResult, progress: bool, log: Callable[[str], Any]) -> None:
    from capstore.metrics import evaluate_run

    for label, summary in result.runs.items():
        ev = evaluate_run(store, summary.run_id, candidates=label == "demo-mils", clip_scorer=models.specs["scorer"],
                          progress=progress)
        result.metrics[label] = dict(ev.corpus)
        result.unavailable.update(ev.unavailable)
