"""MILS on video (tiny X-CLIP, 3 synthetic videos) and audio (tiny CLAP, 3 synthetic clips), end to end.

The same loop as images: a run SIGKILLed after its first commit resumes to exactly the uninterrupted
result, a second identical run makes no model call, ``capstore eval`` writes metrics, and a malformed
medium (a cut MP4, a WAV with a broken header) fails its own item with an error row while the
others go on.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from capstore.store import open_store
from capstore.store.schema import ErrorEvent, Item, MetricValue, WorkItem
from tests.bad_input import invoke
from tests.media_files import break_wav_header, truncate, write_json, write_video, write_wav
from tests.run_helpers import assert_same_results, snapshot

CLI = [sys.executable, "-m", "capstore.cli.main"]
ITERATIONS = 2
GOOD = 3
PROMPTS = {"video": "video_captioning_shorter.txt", "audio": "audio_captioning_shorter.txt"}
POOL = ["a red square", "a blue square moves", "a shape slides to the right", "a dark room", "a high tone",
        "a low hum", "a burst of noise", "a whistle", "silence"]


def _dataset(folder: Path, modality: str) -> list[str]:
    """3 good media and 1 malformed one, their annotation file and the `dataset add` arguments."""
    media = folder / "media"
    if modality == "video":
        for n in range(GOOD):
            write_video(media / f"video{n}.mp4", n)
        truncate(write_video(media / f"video{GOOD}.mp4", 9))  # its index, written last, is gone
        file = write_json(folder / "test_videodatainfo.json", {
            "videos": [{"video_id": f"video{n}", "split": "test", "category": n} for n in range(GOOD + 1)],
            "sentences": [{"video_id": f"video{n}", "caption": c, "sen_id": 2 * n + k}
                          for n in range(GOOD + 1) for k, c in enumerate(("a square moves", "a shape slides"))]})
        return ["msrvtt", "--format", "msrvtt", str(file), "--media", str(media)]
    for n in range(GOOD):
        write_wav(media / f"clip{n}.wav", n, seconds=0.5 + n)
    break_wav_header(write_wav(media / f"clip{GOOD}.wav", 9))
    file = folder / "clotho_captions_evaluation.csv"
    file.write_text("file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n" + "".join(
        f"clip{n}.wav,a tone,a high tone,a beep then noise,a hum,a whistle\n" for n in range(GOOD + 1)))
    return ["clotho", "--format", "clotho", str(file), "--media", str(media)]


def _run_args(folder: Path, modality: str, scorer: str) -> list[str]:
    (folder / "pool.txt").write_text("\n".join(POOL) + "\n")
    prompt = folder / PROMPTS[modality]
    prompt.write_text(f"Scored descriptions of a {modality}:\n{{descriptions}}Write {{requested_number}} better ones, numbered.\n")
    dataset = "msrvtt" if modality == "video" else "clotho"
    return ["run", "--method", "mils", "--dataset", dataset, "--scorer", scorer, "--generator", "fake:slow",
            "--pool", str(folder / "pool.txt"), "--prompt", str(prompt), "--iterations", str(ITERATIONS),
            "--keep", "3", "--requested", "4", "--batch-images", "2", "--quiet"]


def _store(folder: Path, modality: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    db = str(folder / "store.db")
    result = invoke(["dataset", "add", *_dataset(folder, modality), "--db", db])
    assert result.exit_code == 0, result.output
    return db


def _committed(db: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM iteration_states").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _kill_after_first_commit(cmd: list[str], db: str, timeout: float = 180) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and _committed(db) == 0:
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "finished before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return _committed(db)


def _failed_items(db: str) -> dict[str, tuple[str, str, str]]:
    store = open_store(db)
    with store.read() as s:
        failed = s.execute(select(Item.external_id, ErrorEvent.stage, ErrorEvent.kind, ErrorEvent.message)
                           .join(ErrorEvent, ErrorEvent.item_id == Item.id)
                           .join(WorkItem, (WorkItem.item_id == Item.id) & (WorkItem.run_id == ErrorEvent.run_id))
                           .where(WorkItem.status == "failed")).all()
    store.dispose()
    return {ext: (stage, kind, message) for ext, stage, kind, message in failed}


@pytest.mark.parametrize("modality, role", [("video", "video_scorer"), ("audio", "audio_scorer")])
def test_mils_on_media_resumes_after_sigkill_reruns_from_caches_and_evaluates(
        modality: str, role: str, tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scorer = tiny_models.specs[role]
    # The uninterrupted run, in a store of its own (no shared caches).
    reference_db = _store(tmp_path / "reference", modality)
    done = invoke([*_run_args(tmp_path / "reference", modality, scorer), "--db", reference_db])
    assert done.exit_code == 1, done.output  # one item failed: exit 1, the others done
    assert f"run 1: done; {GOOD}/{GOOD + 1} items done, 1 failed" in done.output
    reference = snapshot(open_store(reference_db), 1)
    assert len(reference["captions"]) == GOOD
    bad = f"video{GOOD}" if modality == "video" else f"clip{GOOD}.wav"
    stage, kind, message = _failed_items(reference_db)[bad]
    assert (stage, kind) == (f"encode_{modality}", f"corrupt_{modality}") and bad in message

    # Killed after its first commit, then resumed: the same result.
    db = _store(tmp_path / "killed", modality)
    committed = _kill_after_first_commit([*CLI, *_run_args(tmp_path / "killed", modality, scorer), "--db", db], db)
    assert 0 < committed < GOOD * (ITERATIONS + 1)
    resumed = invoke(["resume", "1", "--quiet", "--db", db])
    assert resumed.exit_code == 1 and f"{GOOD}/{GOOD + 1} items done, 1 failed" in resumed.output, resumed.output
    assert_same_results(snapshot(open_store(db), 1), reference)
    assert set(_failed_items(db)) == {bad}

    # The same run again: every embedding, score and generation from the caches.
    again = invoke([*_run_args(tmp_path / "killed", modality, scorer), "--db", db])
    assert "run 2: done" in again.output and "made 0 model calls" in again.output, again.output
    assert_same_results(snapshot(open_store(db), 2), reference)

    if shutil.which("java") is None:
        pytest.skip("java is needed for the PTB tokenizer of capstore eval")
    evaluated = invoke(["eval", "2", "--no-clipscore", "--quiet", "--db", db])
    assert evaluated.exit_code == 0, evaluated.output
    store = open_store(db)
    with store.read() as s:
        values = s.execute(select(MetricValue.metric, MetricValue.scope).where(MetricValue.run_id == 2)).all()
    store.dispose()
    assert ("CIDEr", "corpus") in values and ("Bleu_4", "corpus") in values
    assert sum(1 for m, scope in values if m == "CIDEr" and scope == "item") == GOOD
    shown = invoke(["sql", "SELECT modality FROM runs WHERE run_id = 2", "--format", "csv", "--db", db])
    assert shown.output.split() == ["modality", modality]


def test_a_medium_changed_after_import_fails_its_item_at_load(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = _store(tmp_path, "audio")
    clip = tmp_path / "media" / "clip1.wav"
    data = bytearray(clip.read_bytes())
    data[-2:] = b"\x01\x02"  # same size, other samples
    clip.write_bytes(bytes(data))
    result = invoke([*_run_args(tmp_path, "audio", tiny_models.specs["audio_scorer"]), "--db", db])
    assert result.exit_code == 1 and f"{GOOD - 1}/{GOOD + 1} items done, 2 failed" in result.output, result.output
    failed = _failed_items(db)
    assert failed["clip1.wav"][:2] == ("load_audio", "corrupt_audio")
    assert "its bytes changed since import" in failed["clip1.wav"][2]
