"""MILS to the letter: the pool subsample, the answer parser, iteration 0's kept set, the defaults.

The reference is facebookresearch/MILS at commit 3db7c6b37d4a8fad14c159c14491bd21bb2590f1:
``main_image_captioning.py`` (``optimize_for_images``: how the pool file is read and subsampled)
and ``optimization_utils/generator.py`` (``strip_line_counters``, lines 15-38: the answer parser;
``Generator.sort_with_exploration``: the top ``keep_previous`` of the (score, text) pairs).
MILS's code is not copied here (its repository's terms): the procedures are restated from it, and
each parser row's expected output was worked out from ``strip_line_counters`` and checked against
it. With ``CAPSTORE_MILS_SRC`` pointing at a MILS checkout, the parser is also compared with MILS's
own function, taken from that file.
"""

from __future__ import annotations

import ast
import os
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from capstore.methods.mils import parse_candidates, pool_top
from capstore.methods.pool import pool_sha, read_pool, store_pool
from capstore.store.schema import IterationState, Item, Run, TextSetMember
from tests.conftest import need_shared

# (a line shape MILS's generator may answer with, what strip_line_counters makes of it). The shapes
# come from its code: the `". " in line[:5]` test, the first "." as the counter's end, the cut at
# "(", strip, then "<|endoftext|>", "<pad>" and "!" removed after the strip, empty texts dropped.
SHAPES: list[tuple[str, list[str]]] = [
    ("1. A dog on a beach", ["A dog on a beach"]),
    ("10. A dog on a beach", ["A dog on a beach"]),
    ("100. A dog", ["A dog"]),  # "100. " is still within the first 5 characters
    ("1000. A dog", []),  # "1000." is not
    ("1) A dog", []),
    ("- A dog", []),
    ("* 1. A dog", ["A dog"]),
    ("  1. A dog", ["A dog"]),
    ("   1. A dog", []),  # three spaces push ". " past the first 5 characters
    ("1.A dog", []),
    ("1.\tA dog", []),
    ("1.  A dog  ", ["A dog"]),
    ("1 . A dog", ["A dog"]),
    (". A dog", ["A dog"]),
    ("1. A dog (on a beach)", ["A dog"]),
    ("1. A dog (a) (b)", ["A dog"]),
    ("1. (A dog) on a beach", []),  # nothing before the "("
    ("1. A dog!", ["A dog"]),
    ("1. A dog !", ["A dog "]),  # "!" goes after the strip: the space stays
    ("1. Wow! A dog!", ["Wow A dog"]),
    ("1. !", []),
    ("1. ", []),
    ("", []),
    ("1. A dog<|endoftext|>", ["A dog"]),
    ("1. A dog <pad><pad>", ["A dog "]),
    ("1. A dog\r", ["A dog"]),  # split on "\n" only; the strip takes the "\r"
    ("Mr. Smith walks a dog", ["Smith walks a dog"]),  # any ". " early in the line counts
    ("e.g. a dog", [". a dog"]),  # the text starts 2 after the *first* "."
    ("1.5. A dog", [". A dog"]),
    ("**1. A dog**", ["A dog**"]),
    ("1. 0.912: A dog", ["0.912: A dog"]),  # an echoed prompt line keeps its score
    ("0.912: A dog", []),
    ("A dog on a beach. It runs.", []),
    ("Sure! Here are 50 new descriptions:", []),
    ("1. Ein Hund – am Strand", ["Ein Hund – am Strand"]),
    ("1. A dog\n2. A dog\n3. a dog", ["A dog", "a dog"]),  # repeats dropped, case kept
    ("Here you go:\n\n1. A dog\n2) A cat\n3. A bird (flying)!\n", ["A dog", "A bird"]),
]


def _mils_strip_line_counters():  # type: ignore[no-untyped-def]
    """MILS's own ``strip_line_counters``, compiled alone from a MILS checkout (no torch import)."""
    root = os.environ.get("CAPSTORE_MILS_SRC")
    if not root or not (Path(root) / "optimization_utils" / "generator.py").is_file():
        pytest.skip("set CAPSTORE_MILS_SRC to a facebookresearch/MILS checkout to compare with its own code")
    tree = ast.parse((Path(root) / "optimization_utils" / "generator.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "strip_line_counters")
    namespace: dict[str, object] = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "generator.py", "exec"), namespace)
    return namespace["strip_line_counters"]


@pytest.mark.parametrize("text, expected", SHAPES, ids=[repr(t)[:40] for t, _ in SHAPES])
def test_parser_keeps_and_drops_what_mils_does(text: str, expected: list[str]) -> None:
    assert parse_candidates(text) == expected


def test_parser_equals_mils_own_function_on_every_shape() -> None:
    mils = _mils_strip_line_counters()
    for text, _ in SHAPES:
        assert set(parse_candidates(text)) == mils(text), text
    whole = "\n".join(text for text, _ in SHAPES)
    assert set(parse_candidates(whole)) == mils(whole)


# -- the pool -------------------------------------------------------------------------------------

def mils_pool(path: Path, size: int | None) -> list[str]:
    """The pool as MILS's optimize_for_images builds it: the file's lines stripped (duplicates and
    blank lines kept), then, unless all, random.seed(0) and random.sample of ``size`` of them."""
    with open(path) as f:
        lines = [line.strip() for line in f.readlines()]
    if size is not None:
        random.seed(0)
        lines = random.sample(lines, size)
    return lines


def _synthetic_pool(tmp_path: Path) -> Path:
    """Duplicates, blank lines, surrounding spaces, CRLF and a form feed (which splitlines would split on)."""
    lines = [f"  a {c} {t} on a table " for c in ("red", "blue", "green") for t in ("ball", "box", "kite")]
    lines = lines * 3 + ["", "a red ball on a table", "   ", "a sign\x0cwith a page break", "a red ball on a table"]
    random.Random(7).shuffle(lines)
    path = tmp_path / "pool.txt"
    path.write_bytes("\r\n".join(lines).encode() + b"\n")
    return path


@pytest.mark.parametrize("size", [None, 1, 5, 17, 32])
def test_pool_is_mils_subsample_of_the_lines_as_read(tmp_path: Path, size: int | None) -> None:
    path = _synthetic_pool(tmp_path)
    ours = read_pool(path, size)
    theirs = mils_pool(path, size)
    assert ours == [line for line in theirs if line]  # the same draw, line for line; blank lines left out
    if size is None:  # 32 lines as read: 2 blank, 30 descriptions of which 10 distinct, all kept
        assert (len(theirs), len(ours), len(set(ours))) == (32, 30, 10)


def test_pool_size_beyond_the_file_is_refused(tmp_path: Path) -> None:
    from capstore.errors import InputError

    path = _synthetic_pool(tmp_path)
    with pytest.raises(InputError, match="--pool-size 1000: pool file .* has 32 lines"):
        read_pool(path, 1000)


@pytest.mark.parametrize("size", [1000, 5000, 10000, None])
def test_shared_pool_subsets_are_mils_subsets(size: int | None) -> None:
    path = need_shared("data/mils/image_descriptions_per_class.txt")
    theirs = mils_pool(path, size)
    ours = read_pool(path, size)
    assert ours == theirs
    if size is None:
        assert len(ours) == 28_768 and len(set(ours)) == 28_379  # duplicates included, as MILS scores them


def test_pool_identity_counts_duplicates(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _synthetic_pool(tmp_path)
    lines = read_pool(path, None)
    sha = store_pool(store, lines, "pool.txt")
    assert sha == pool_sha(lines) != pool_sha(list(dict.fromkeys(lines)))
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(TextSetMember).where(TextSetMember.set_sha == sha)) == len(lines)
    from capstore.methods.pool import load_pool

    assert load_pool(store, sha) == lines


# -- iteration 0: the kept set -------------------------------------------------------------------

def mils_top(lines: list[str], scores: list[float], keep: int) -> list[tuple[str, float]]:
    """MILS's top of iteration 0: (score, line) pairs sorted by -score with Python's stable sort,
    the first ``keep_previous`` taken (generator.py, sort_with_exploration without exploration)."""
    pairs = sorted(zip(scores, lines), key=lambda x: -x[0])[:keep]
    return [(line, score) for score, line in pairs]


def test_pool_top_is_mils_top_with_ties_and_duplicates() -> None:
    rng = random.Random(3)
    for _ in range(50):
        distinct = [f"line {i}" for i in range(rng.randrange(1, 30))]
        lines = [rng.choice(distinct) for _ in range(rng.randrange(1, 60))]
        by_text = {t: float(rng.choice([0.1, 0.2, 0.25, rng.random()])) for t in distinct}  # many exact ties
        scores = np.array([by_text[t] for t in lines], dtype=np.float32)
        keep = rng.randrange(1, 12)
        assert pool_top(lines, scores, keep) == mils_top(lines, [float(s) for s in scores], keep)


def test_pool_top_of_a_full_size_pool_with_ties_at_the_cutoff() -> None:
    """A 28,767-line pool (only the lines at least as good as the keep-th are sorted): the same
    places as MILS's full sort, with many lines tied at the cutoff and with fewer numbers than places."""
    rng = np.random.default_rng(5)
    lines = [f"line {i % 20_000}" for i in range(28_767)]
    for levels in (3, 40, 1_000_000):
        scores = (rng.integers(0, levels, len(lines)) / levels).astype(np.float32)
        for keep in (1, 50, 500):
            assert pool_top(lines, scores, keep) == mils_top(lines, [float(s) for s in scores], keep)
    scores = np.full(len(lines), np.nan, dtype=np.float32)
    scores[[7, 3, 11]] = [0.5, 0.75, 0.5]  # three numbers for 50 places: they come first, in MILS's order
    assert pool_top(lines, scores, 50)[:3] == [("line 3", 0.75), ("line 7", 0.5), ("line 11", 0.5)]
    assert len(pool_top(lines, scores, 50)) == 50


def test_iteration_zero_keeps_mils_kept_set_on_a_pool_with_duplicates(demo_store, tiny_models,  # type: ignore[no-untyped-def]
                                                                         tmp_path: Path) -> None:
    """Repeated lines each take a place among the kept, as in MILS: fewer distinct lines are kept."""
    from capstore.backends.registry import load_backend
    from capstore.cli.main import cli
    from capstore.methods.demo_assets import write_demo_assets
    from capstore.store.images import read_image

    _, prompt = write_demo_assets(tmp_path / "assets")
    distinct = [f"a {c} {t}" for c in ("red", "blue", "green", "yellow") for t in ("circle", "square", "triangle")]
    pool = tmp_path / "dup_pool.txt"
    pool.write_text("\n".join(distinct * 4) + "\n")  # every line four times
    keep, size = 6, 40
    db = str(demo_store.url).replace("sqlite:///", "")
    result = CliRunner().invoke(cli, [
        "run", "--method", "mils", "--scorer", tiny_models.specs["scorer"], "--generator", "fake:mutate",
        "--pool", str(pool), "--pool-size", str(size), "--prompt", str(prompt), "--iterations", "1",
        "--keep", str(keep), "--requested", "4", "--limit", "3", "--quiet", "--db", db])
    assert result.exit_code == 0, result.output
    lines = mils_pool(pool, size)
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    text_emb = scorer.encode_texts(lines)
    with demo_store.read() as s:
        run = s.scalars(select(Run)).one()
        items = s.execute(select(Item.id, Item.image_sha).where(Item.id.in_(
            select(IterationState.item_id).where(IterationState.run_id == run.id)))).all()
        kept = {item_id: kept for item_id, kept in s.execute(
            select(IterationState.item_id, IterationState.kept).where(IterationState.run_id == run.id,
                                                                       IterationState.iteration == 0))}
        images = {item_id: read_image(s, sha) for item_id, sha in items}
    from capstore.store.content import sha256_text

    fewer = 0
    for item_id, image in images.items():
        scores = (text_emb @ scorer.encode_images([image])[0]).tolist()
        expected = {sha256_text(text) for text, _ in mils_top(lines, scores, keep)}
        assert {sha for sha, _ in kept[item_id]} == expected
        fewer += len(expected) < keep
    assert fewer == len(images)  # with every line four times, no image keeps `keep` distinct lines


# -- defaults -------------------------------------------------------------------------------------

def test_generation_defaults_are_mils(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    from capstore.backends.registry import load_backend
    from capstore.runs.config import DEFAULT_MAX_NEW_TOKENS, RunConfig

    assert DEFAULT_MAX_NEW_TOKENS == 3000
    assert RunConfig(method="mils", dataset="demo").generator_params == {"temperature": 0.5, "top_p": 0.9,
                                                                          "max_new_tokens": 3000}
    gen = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu")
    assert gen.params == {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 3000}
    api = load_backend("generator", "openai:m", demo_store, base_url="http://127.0.0.1:9/v1", api_key="k")
    assert api.send_params["max_tokens"] == 3000
