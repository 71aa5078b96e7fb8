"""Bad run options: every one refused in one line (exit 2) before anything is written.

The store holds the demo dataset and one finished run, so "unchanged" is checked against real
content: row counts of every table and the database file's bytes (tests/bad_input.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from capstore.methods.demo_assets import write_demo_assets
from tests.bad_input import Case, check_case, copy_sqlite, invoke

BIG = str(2**64)
HUGE = "1" + "0" * 40


def _file(name: str, content: bytes):  # type: ignore[no-untyped-def]
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content)
        return path
    return make


def _bad_prompt(tmp: Path) -> Path:
    path = tmp / "prompt-without-placeholder.txt"
    path.write_text("Describe the image in {requested_number} lines.\n")
    return path


MILS = ["run", "--method", "mils", "--generator", "fake:mutate", "--scorer", "{scorer}", "--pool", "{pool}",
        "--prompt", "{prompt}", "--quiet", "--db", "{db}"]
FAKE = ["run", "--method", "fake", "--captioner", "fake:echo", "--quiet", "--db", "{db}"]


def mils(*extra: str) -> list[str]:
    return [*MILS, *extra]


def fake(*extra: str) -> list[str]:
    return [*FAKE, *extra]


CASES = [
    # numeric options out of range
    Case("limit-zero", mils("--limit", "0"), ["--limit 0", "from 1"]),
    Case("limit-negative", mils("--limit", "-3"), ["--limit -3"]),
    Case("limit-beyond-64-bits", mils("--limit", BIG), ["--limit", BIG]),
    Case("limit-not-a-number", mils("--limit", "abc"), ["--limit", "abc"]),
    Case("batch-images-zero", mils("--batch-images", "0"), ["--batch-images 0"]),
    Case("batch-images-huge", mils("--batch-images", "100000"), ["--batch-images 100000"]),
    Case("pool-size-zero", mils("--pool-size", "0"), ["--pool-size 0"]),
    Case("pool-size-negative", mils("--pool-size", "-5"), ["--pool-size -5"]),
    Case("pool-size-text", mils("--pool-size", "lots"), ["--pool-size", "lots"]),
    Case("keep-zero", mils("--keep", "0"), ["--keep 0"]),
    Case("keep-negative", mils("--keep", "-1"), ["--keep -1"]),
    Case("keep-huge", mils("--keep", "1000000"), ["--keep 1000000"]),
    Case("requested-zero", mils("--requested", "0"), ["--requested 0"]),
    Case("requested-huge", mils("--requested", "100000"), ["--requested 100000"]),
    Case("iterations-negative", mils("--iterations", "-1"), ["--iterations -1"]),
    Case("iterations-huge", mils("--iterations", "1000000"), ["--iterations 1000000"]),
    Case("iterations-fraction", mils("--iterations", "1.5"), ["--iterations", "1.5"]),
    Case("max-new-tokens-zero", mils("--max-new-tokens", "0"), ["--max-new-tokens 0"]),
    Case("max-new-tokens-negative", mils("--max-new-tokens", "-10"), ["--max-new-tokens -10"]),
    Case("max-new-tokens-beyond-64-bits", mils("--max-new-tokens", HUGE), ["--max-new-tokens"]),
    Case("temperature-nan", mils("--temperature", "nan"), ["--temperature nan"]),
    Case("temperature-inf", mils("--temperature", "inf"), ["--temperature inf"]),
    Case("temperature-negative", mils("--temperature", "-0.5"), ["--temperature -0.5"]),
    Case("top-p-zero", mils("--top-p", "0"), ["--top-p 0"]),
    Case("top-p-above-one", mils("--top-p", "1.5"), ["--top-p 1.5"]),
    Case("top-p-nan", mils("--top-p", "nan"), ["--top-p nan"]),
    Case("seed-beyond-64-bits", mils("--seed", BIG), ["--seed", BIG]),
    Case("seed-huge", mils("--seed", HUGE), ["--seed", HUGE]),
    Case("seed-negative", mils("--seed", "-1"), ["--seed -1"]),
    Case("init-from-beyond-64-bits", mils("--init-from", BIG), ["--init-from", BIG]),
    Case("init-from-zero", mils("--init-from", "0"), ["--init-from 0"]),
    Case("init-from-unknown-run", mils("--init-from", "999"), ["--init-from 999", "no such run"]),
    Case("early-stop-zero-patience", mils("--early-stop", "0"), ["--early-stop", "PATIENCE"]),
    Case("early-stop-nan-eps", mils("--early-stop", "2:nan"), ["--early-stop", "EPS"]),
    Case("early-stop-negative-eps", mils("--early-stop", "2:-1"), ["--early-stop", "EPS"]),
    Case("early-stop-not-numbers", mils("--early-stop", "x:y"), ["--early-stop", "x:y"]),
    Case("num-candidates-zero", fake("--num-candidates", "0"), ["--num-candidates 0"]),
    Case("num-candidates-huge", fake("--num-candidates", "5000"), ["--num-candidates 5000"]),
    # options that do not apply to the method
    Case("generator-with-blip2", ["run", "--method", "blip2", "--generator", "fake:mutate", "--db", "{db}"],
         ["--generator", "--method blip2"]),
    Case("pool-with-baseline", fake("--pool", "{pool}"), ["--pool", "--method fake"]),
    Case("prompt-with-baseline", fake("--prompt", "{prompt}"), ["--prompt", "--method fake"]),
    Case("iterations-with-baseline", fake("--iterations", "5"), ["--iterations", "--method fake"]),
    Case("keep-with-baseline", fake("--keep", "3"), ["--keep", "--method fake"]),
    Case("requested-with-baseline", fake("--requested", "3"), ["--requested", "--method fake"]),
    Case("pool-size-with-baseline", fake("--pool-size", "10"), ["--pool-size", "--method fake"]),
    Case("early-stop-with-baseline", fake("--early-stop", "2"), ["--early-stop", "--method fake"]),
    Case("init-from-with-baseline", fake("--init-from", "1"), ["--init-from", "--method fake"]),
    Case("captioner-with-mils", mils("--captioner", "fake:echo"), ["--captioner", "--method mils"]),
    Case("num-candidates-with-mils", mils("--num-candidates", "3"), ["--num-candidates", "--method mils"]),
    Case("adapter-with-mils", mils("--adapter", "{tmp}"), ["--adapter", "--method mils"]),
    Case("adapter-with-fake", fake("--adapter", "{tmp}"), ["--adapter", "llava"]),
    Case("base-url-without-openai", mils("--base-url", "http://127.0.0.1:9/v1"), ["--base-url", "fake:mutate"]),
    # backends that cannot work on this machine: refused before the run exists
    Case("device-cuda-without-cuda", mils("--device", "cuda"), ["--device cuda"]),
    Case("device-unknown", mils("--device", "tpu"), ["--device", "tpu"]),
    Case("dtype-unknown", mils("--dtype", "float8"), ["--dtype", "float8"]),
    Case("scorer-dtype-unknown", mils("--scorer-dtype", "half-ish"), ["--scorer-dtype", "half-ish"]),
    Case("generator-dtype-unknown", mils("--generator-dtype", "int4"), ["--generator-dtype", "int4"]),
    Case("scorer-dtype-with-baseline", fake("--scorer-dtype", "float32"), ["--scorer-dtype", "--method fake"]),
    # decoding presets (captioners) and the vllm: generator's options
    Case("decoding-unknown", ["run", "--method", "blip2", "--decoding", "beam9", "--db", "{db}"],
         ["--decoding 'beam9'", "lavis-coco"]),
    Case("decoding-with-mils", mils("--decoding", "greedy"), ["--decoding", "--method mils"]),
    Case("decoding-with-an-api-captioner", fake("--decoding", "greedy"), ["--decoding", "blip2 and llava", "fake:echo"]),
    Case("decoding-beams-with-candidates", ["run", "--method", "blip2", "--decoding", "lavis-coco", "--num-candidates",
                                            "3", "--db", "{db}"], ["--decoding lavis-coco", "--num-candidates 3"]),
    Case("gpu-memory-utilization-zero", mils("--gpu-memory-utilization", "0"), ["--gpu-memory-utilization 0"]),
    Case("gpu-memory-utilization-above-one", mils("--gpu-memory-utilization", "1.5"), ["--gpu-memory-utilization 1.5"]),
    Case("gpu-memory-utilization-nan", mils("--gpu-memory-utilization", "nan"), ["--gpu-memory-utilization nan"]),
    Case("max-model-len-zero", mils("--max-model-len", "0"), ["--max-model-len 0"]),
    Case("tensor-parallel-zero", mils("--tensor-parallel", "0"), ["--tensor-parallel 0"]),
    Case("tensor-parallel-huge", mils("--tensor-parallel", "65"), ["--tensor-parallel 65", "64"]),
    Case("tensor-parallel-with-hf-generator", mils("--tensor-parallel", "2"), ["--tensor-parallel", "vllm:", "fake:mutate"]),
    Case("max-model-len-with-baseline", fake("--max-model-len", "4096"), ["--max-model-len", "--method fake"]),
    Case("vllm-generator-not-installed", mils("--generator", "vllm:meta-llama/Meta-Llama-3.1-8B-Instruct"),
         ["vllm:meta-llama/Meta-Llama-3.1-8B-Instruct", "vllm serve"], env={"HF_HUB_OFFLINE": "1"}),
    Case("device-cuda-index-without-cuda", mils("--device", "cuda:3"), ["--device cuda:3"]),
    Case("openai-captioner-without-key", ["run", "--method", "openai", "--captioner", "openai:gpt-4o", "--db", "{db}"],
         ["OPENAI_API_KEY"], env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}),
    Case("openai-generator-without-key", mils("--generator", "openai:gpt-4o"), ["OPENAI_API_KEY"],
         env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}),
    Case("hub-weights-not-here-offline", ["run", "--method", "blip2", "--db", "{db}"],
         ["Salesforce/blip2-flan-t5-xl", "HF_HUB_OFFLINE"], env={"HF_HUB_OFFLINE": "1"}),
    Case("hub-weights-not-here-no-network", ["run", "--method", "blip2", "--db", "{db}"],
         ["Salesforce/blip2-flan-t5-xl", "HF_HUB_OFFLINE"], env={"HF_HUB_OFFLINE": None}),
    Case("label-with-nul", fake("--label", "a\x00b"), ["--label"]),
    # names and files
    Case("unknown-method", ["run", "--method", "nope", "--db", "{db}"], ["unknown method 'nope'"]),
    Case("unknown-dataset", mils("--dataset", "nope"), ["nope"]),
    Case("unknown-split", mils("--split", "nope"), ["nope"]),
    Case("scorer-without-colon", mils("--scorer", "nonsense"), ["--scorer", "nonsense"]),
    Case("unknown-generator-backend", mils("--generator", "unknown:model"), ["unknown backend 'unknown'"]),
    Case("captioner-of-another-method", ["run", "--method", "blip2", "--captioner", "llava:x", "--db", "{db}"],
         ["--method blip2", "llava:x"]),
    Case("prompt-without-placeholder", mils("--prompt", "{file}"), ["{file}", "{{descriptions}}"], make=_bad_prompt),
    Case("missing-pool-file", mils("--pool", "{tmp}/none.txt"), ["{tmp}/none.txt"]),
    Case("pool-file-with-nul", mils("--pool", "{file}"), ["pool file", "NUL", "line 2"],
         make=_file("pool.txt", b"a red circle\na blue\x00 square\n")),
    Case("pool-file-not-utf8", mils("--pool", "{file}"), ["pool file", "not UTF-8"],
         make=_file("pool.txt", b"a red circle\n\xff\xfe square\n")),
    Case("pool-file-is-a-folder", mils("--pool", "{tmp}"), ["pool file", "folder"]),
    Case("pool-size-beyond-the-pool", mils("--pool-size", "100000"), ["--pool-size", "100000"]),
    Case("prompt-file-with-nul", mils("--prompt", "{file}"), ["prompt file", "NUL"],
         make=_file("prompt.txt", b"{descriptions}\n\x00\n")),
    Case("missing-prompt-file", mils("--prompt", "{tmp}/none.txt"), ["{tmp}/none.txt"]),
    Case("mils-without-pool", ["run", "--method", "mils", "--generator", "fake:mutate", "--scorer", "{scorer}",
                               "--prompt", "{prompt}", "--db", "{db}"], ["--pool"]),
    # run ids
    Case("resume-beyond-64-bits", ["resume", BIG, "--db", "{db}"], [BIG]),
    Case("resume-zero", ["resume", "0", "--db", "{db}"], ["run id 0"]),
    Case("resume-unknown", ["resume", "999", "--db", "{db}"], ["no run 999"]),
    Case("worker-beyond-64-bits", ["worker", BIG, "--db", "{db}"], [BIG]),
    Case("status-beyond-64-bits", ["status", BIG, "--db", "{db}"], [BIG]),
    Case("status-unknown", ["status", "999", "--db", "{db}"], ["999"]),
    Case("extend-shrinks", ["resume", "1", "--iterations", "1", "--db", "{db}"], ["run 1 is a fake run", "MILS"]),
    Case("eval-beyond-64-bits", ["eval", BIG, "--db", "{db}"], [BIG]),
    Case("export-results-beyond-64-bits", ["export-results", BIG, "{tmp}/out.json", "--db", "{db}"], [BIG]),
    Case("report-beyond-64-bits", ["report", BIG, "--out", "{tmp}/report", "--db", "{db}"], [BIG]),
    Case("export-beyond-64-bits", ["export", BIG, "--parquet", "{tmp}/parquet", "--db", "{db}"], [BIG]),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A SQLite store with the demo dataset and one finished run (run 1, method fake), plus MILS's files."""
    folder = tmp_path_factory.mktemp("seeded")
    db = str(folder / "seed.db")
    assert invoke(["dataset", "demo", "--db", db]).exit_code == 0
    done = invoke(["run", "--method", "fake", "--captioner", "fake:echo", "--limit", "3", "--quiet", "--db", db])
    assert done.exit_code == 0 and "3/3 items done" in done.output, done.output
    from capstore.store import open_store

    open_store(db).dispose()  # the last connection checkpoints the WAL: the copies are one file each
    pool, prompt = write_demo_assets(folder / "assets")
    return {"db": db, "pool": str(pool), "prompt": str(prompt), "scorer": tiny_models.specs["scorer"]}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_run_option_is_refused_and_nothing_is_written(case: Case, seeded: dict[str, str], tmp_path: Path) -> None:
    db = copy_sqlite(seeded["db"], tmp_path / "store.db")
    args = [a.replace("{scorer}", seeded["scorer"]).replace("{pool}", seeded["pool"])
            .replace("{prompt}", seeded["prompt"]) for a in case.args]
    check_case(Case(case.id, args, case.culprits, case.make, case.env), db, tmp_path)


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 70 and len({c.id for c in CASES}) == len(CASES)


def test_a_valid_run_with_the_same_options_goes_through(seeded: dict[str, str], tmp_path: Path) -> None:
    """The base arguments of the table are right: the refusals come from the bad option alone."""
    db = copy_sqlite(seeded["db"], tmp_path / "store.db")
    args = [a.format(**{**seeded, "db": db}) for a in mils("--limit", "2", "--iterations", "1", "--keep", "3",
                                                     "--requested", "4", "--seed", str(2**62))]
    result = invoke(args)
    assert result.exit_code == 0 and "2/2 items done" in result.output, result.output
    result = invoke([a.format(db=db) for a in fake("--limit", "2", "--num-candidates", "2")])
    assert result.exit_code == 0 and "2/2 items done" in result.output, result.output
