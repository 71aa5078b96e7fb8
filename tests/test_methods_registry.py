"""The method registry: the engine builds a run's worker and counts its steps from it, not from the method's name."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from capstore.errors import InputError
from capstore.methods import BASELINES, METHODS
from capstore.methods import registry
from capstore.methods.registry import METHOD_SPECS, MethodSpec, method_spec, worker_class
from capstore.runs import RunConfig, create_run, work
from capstore.runs.baseline_worker import BaselineWorker
from capstore.runs.engine import steps_left
from capstore.runs.mils_worker import MilsWorker
from capstore.runs.steps import Step, commit_steps
from capstore.store.content import get_texts
from capstore.store.schema import Caption


def test_the_registry_names_each_methods_worker_and_steps() -> None:
    assert worker_class("mils") is MilsWorker and worker_class("llava") is BaselineWorker
    assert METHODS == tuple(METHOD_SPECS) and "mils" not in BASELINES and "fake" in BASELINES
    assert method_spec("mils").steps_per_item(10) == 11 and method_spec("blip2").steps_per_item(10) == 1
    assert method_spec("mils").media == ("image", "video", "audio") and method_spec("openai").media == ("image",)
    with pytest.raises(InputError, match="unknown method 'nope'; available: mils, blip2"):
        method_spec("nope")


class ShoutWorker:
    """A method in a few lines: each item's caption is its medium's sha, shouted, in two steps."""

    def __init__(self, store, run_id, cfg, worker, backends, on_step) -> None:  # type: ignore[no-untyped-def]
        self.store, self.run_id, self.cfg, self.worker, self.on_step = store, run_id, cfg, worker, on_step

    def process(self, states: list[Any], attempts: dict[int, int]) -> None:
        for iteration in (0, 1):
            steps = []
            for st in states:
                text = f"{st.image.sha256[:8].upper()}!" * (iteration + 1)
                steps.append(Step(st.work_id, st.item_id, iteration, [(text, "generated", 1.0)], [(text, 1.0)],
                                  final=iteration == 1, caption=(text, 1.0, iteration) if iteration == 1 else None))
            commit_steps(self.store, self.run_id, self.worker, steps, self.cfg.lease_seconds)
            for _ in steps:
                self.on_step(iteration == 1)


def test_a_new_method_is_its_worker_and_its_registry_line(demo_store, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    run_id = create_run(demo_store, RunConfig(method="fake", dataset="demo", captioner="fake:echo", limit=3))
    monkeypatch.setitem(registry.METHOD_SPECS, "fake", MethodSpec("fake", f"{__name__}:ShoutWorker", iterative=True))
    assert steps_left(demo_store, run_id) == 3 * (RunConfig(method="fake", dataset="demo").iterations + 1)
    summary = work(demo_store, run_id, progress=False)
    assert summary.status == "done" and summary.steps == 6 and summary.model_calls == 0
    with demo_store.read() as s:
        shas = s.scalars(select(Caption.text_sha).where(Caption.run_id == run_id)).all()
        texts = sorted(get_texts(s, shas).values())
    assert len(texts) == 3 and all(t.endswith("!") and t.count("!") == 2 for t in texts)


def test_options_and_backends_follow_the_methods_spec_not_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from capstore.runs.validate import check_applicable

    monkeypatch.setitem(registry.METHOD_SPECS, "mils2", dataclasses.replace(METHOD_SPECS["mils"], name="mils2"))
    check_applicable("mils2", {"keep", "pool", "prompt", "label"})  # MILS's options: a MILS-like method takes them
    with pytest.raises(InputError, match=r"--captioner does not apply to --method mils2 \(it is for the single-pass"):
        check_applicable("mils2", {"captioner"})
    with pytest.raises(InputError, match=r"--adapter does not apply to --method blip2 \(it is for llava\)"):
        check_applicable("blip2", {"adapter"})
    check_applicable("llava", {"adapter", "decoding"})
    with pytest.raises(InputError, match=r"--keep does not apply to --method fake \(it is for mils, mils2\)"):
        check_applicable("fake", {"keep"})
    cfg = RunConfig(method="mils2", dataset="d", scorer="open_clip:x", generator="fake:mutate", captioner="fake:echo")
    assert cfg.backend_specs() == [("scorer", "open_clip:x"), ("generator", "fake:mutate")]
