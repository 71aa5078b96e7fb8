"""Helpers for run tests: demo assets, CLI argument lists and result snapshots to compare runs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from capstore.methods.demo_assets import write_demo_assets
from capstore.store.engine import Store
from capstore.store.schema import Candidate, Caption, IterationState, Item


def mils_args(tmp_path: Path, scorer: str, generator: str = "fake:mutate", iterations: int = 3,
              extra: tuple[str, ...] = ()) -> list[str]:
    pool, prompt = write_demo_assets(tmp_path / "assets")
    return ["run", "--method", "mils", "--scorer", scorer, "--generator", generator, "--pool", str(pool),
            "--prompt", str(prompt), "--iterations", str(iterations), "--keep", "5", "--requested", "8",
            "--batch-images", "4", "--quiet", *extra]


def assert_same_results(a: dict[str, object], b: dict[str, object]) -> None:
    """Same texts, origins, iterations and kept sets; scores equal to float noise (batching)."""
    import numpy as np

    for key in ("captions", "candidates", "states"):
        left, right = a[key], b[key]
        assert _strip(left) == _strip(right), key
        assert np.allclose(_scores(left), _scores(right), atol=1e-5), key


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_strip(v) for v in value)
    return None if isinstance(value, float) else value


def _scores(value: object) -> list[float]:
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in _scores(value[k])]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _scores(v)]
    return [value] if isinstance(value, float) else []


def snapshot(store: Store, run_id: int) -> dict[str, object]:
    """Everything a run produced, keyed by item external id (comparable across runs and stores)."""
    with store.read() as s:
        ext = dict(s.execute(select(Item.id, Item.external_id)).all())
        captions = {ext[i]: (t, round(sc, 6) if sc is not None else None, it) for i, t, sc, it in s.execute(
            select(Caption.item_id, Caption.text_sha, Caption.score, Caption.iteration).where(Caption.run_id == run_id))}
        candidates = sorted((ext[i], it, t, o, round(sc, 6) if sc is not None else None) for i, it, t, o, sc in s.execute(
            select(Candidate.item_id, Candidate.iteration, Candidate.text_sha, Candidate.origin, Candidate.score)
            .where(Candidate.run_id == run_id)))
        states = sorted((ext[i], it, [tuple(pair) for pair in k]) for i, it, k in s.execute(
            select(IterationState.item_id, IterationState.iteration, IterationState.kept)
            .where(IterationState.run_id == run_id)))
    return {"captions": captions, "candidates": candidates, "states": states}
