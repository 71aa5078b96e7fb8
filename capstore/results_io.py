"""COCO results files (``[{"image_id": ..., "caption": ...}, ...]``) in and out of the store.

An imported file becomes a finished run with status ``external`` (method ``external``): its config
holds the file's sha256, name and the label, so importing the identical file under the same label
again finds that run and adds nothing. Its work items are all ``done`` (so ``capstore runs list``
shows N/N) and each entry is a caption; texts are content-addressed as everywhere. Everything is
checked before anything is written, and written in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from capstore import __version__
from capstore.datasets.lookup import find_split
from capstore.errors import InputError
from capstore.inputs import check_text, display, read_bytes, read_json
from capstore.store.content import put_texts
from capstore.store.engine import Store
from capstore.store.ids import check_run_id
from capstore.store.schema import Caption, Item, Run, Text, WorkItem, utcnow

EXTERNAL = "external"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_results(path: Path, raw: bytes | None = None) -> list[tuple[str, str]]:
    """(external image id, caption) pairs of a COCO results file; InputError naming the culprit."""
    data = read_json(path, "results file", raw)
    if not isinstance(data, list):
        raise InputError(f"{display(path)}: not a COCO results file: expected a JSON list of "
                         f'{{"image_id": ..., "caption": ...}} objects, found a {type(data).__name__}')
    if not data:
        raise InputError(f"{display(path)}: the results file holds no results")
    seen: dict[str, int] = {}
    out = []
    for n, entry in enumerate(data):
        for key in ("image_id", "caption"):
            if not isinstance(entry, dict) or key not in entry:
                raise InputError(f"{display(path)}: entry {n} has no {key!r} "
                                 f"(expected {{\"image_id\": ..., \"caption\": ...}})")
        image_id, caption = entry["image_id"], entry["caption"]
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or str(image_id) == "":
            raise InputError(f"{display(path)}: entry {n} has image_id {image_id!r}: "
                             "expected an integer or a string")
        if not isinstance(caption, str):
            raise InputError(f"{display(path)}: entry {n} (image_id {image_id}) has a caption that is not "
                             "a string")
        if not caption.strip():
            raise InputError(f"{display(path)}: entry {n} (image_id {image_id}) has an empty caption")
        key_id = str(image_id)
        if key_id in seen:
            raise InputError(f"{display(path)}: image_id {image_id} appears twice (entries {seen[key_id]} and {n})")
        seen[key_id] = n
        out.append((key_id, caption))
    return out


def import_results(store: Store, path: str | Path, dataset: str, label: str, split: str | None = None) -> tuple[int, bool]:
    """Import a COCO results file as an external run of ``dataset``/``split``; returns (run id, created).

    The identical file (same bytes) under the same label and split returns the existing run.
    """
    path = Path(path)
    if not label or not label.strip():
        raise InputError("--label must not be empty: it names the imported run in reports")
    check_text(label, "--label")
    raw = read_bytes(path, "results file")
    results = read_results(path, raw)
    file_sha = _sha(raw)
    with store.write() as s:
        sp = find_split(s, dataset, split)
        config = {"method": EXTERNAL, "dataset": dataset, "split": sp.name, "file_sha256": file_sha,
                  "file_name": path.name, "label": label, "results": len(results)}
        config_hash = _sha(json.dumps({k: config[k] for k in ("dataset", "split", "file_sha256", "label")},
                                      sort_keys=True).encode())
        found = s.scalar(select(Run.id).where(Run.method == EXTERNAL, Run.config_hash == config_hash, Run.split_id == sp.id)
                         .order_by(Run.id).limit(1))
        if found is not None:
            return int(found), False
        items = dict(s.execute(select(Item.external_id, Item.id).where(Item.split_id == sp.id)).all())
        unknown = [(n, ext) for n, (ext, _) in enumerate(results) if ext not in items]
        if unknown:
            more = f" (and {len(unknown) - 1} more unknown)" if len(unknown) > 1 else ""
            raise InputError(f"{display(path)}: image_id {unknown[0][1]} (entry {unknown[0][0]}) is not an "
                             f"item of {dataset}/{sp.name}{more}")
        now = utcnow()
        run = Run(method=EXTERNAL, label=label, config=config, config_hash=config_hash, split_id=sp.id,
                  status=EXTERNAL, seed=0, capstore_version=__version__, created_at=now, started_at=now, finished_at=now)
        s.add(run)
        s.flush()
        shas = put_texts(s, [caption for _, caption in results])
        s.execute(Caption.__table__.insert(), [{"run_id": run.id, "item_id": items[ext], "text_sha": sha, "score": None,
                                               "iteration": None, "created_at": now}
                                              for (ext, _), sha in zip(results, shas)])
        s.execute(WorkItem.__table__.insert(), [{"run_id": run.id, "item_id": items[ext], "status": "done",
                                                 "attempts": 0, "iterations_done": 0, "updated_at": now}
                                                for ext, _ in results])
        return int(run.id), True


def export_results(store: Store, run_id: int, path: str | Path) -> int:
    """Write run ``run_id``'s captions as a COCO results file; returns the number of captions written.

    ``image_id`` is an integer where the item's external id is one (as in COCO), else the string.
    """
    from capstore.metrics.store_values import item_order

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    with store.read() as s:
        if s.get(Run, check_run_id(run_id)) is None:
            raise InputError(f"no run {run_id} in this store (see `capstore runs list`)")
        rows = s.execute(select(Item.external_id, Text.text).join(Caption, Caption.item_id == Item.id)
                         .join(Text, Text.sha256 == Caption.text_sha).where(Caption.run_id == run_id)).all()
    if not rows:
        raise InputError(f"run {run_id} has no captions to export")
    entries: list[dict[str, Any]] = [{"image_id": _coco_id(ext), "caption": text}
                                     for ext, text in sorted(rows, key=lambda r: item_order(r[0]))]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)  # whole file or nothing: a reader never sees half a results file
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return len(entries)


def _coco_id(external_id: str) -> int | str:
    return int(external_id) if external_id.isascii() and external_id.isdigit() and str(int(external_id)) == external_id else external_id

