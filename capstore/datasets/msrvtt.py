"""Importing MSR-VTT (``train_val_videodatainfo.json``, ``test_videodatainfo.json``).

``videos[]`` with ``video_id`` (``video0``…), ``split`` (``train``, ``validate``, ``test``) and
``category`` (kept as an item attribute), ``sentences[]`` with ``video_id`` and ``caption`` (``sen_id``
its id). The video files are ``<video_id>.mp4`` (or .webm, .mkv, .avi) in the media folder, kept by
path, sha256 and size. All splits at once (``--split`` imports one).
"""

from __future__ import annotations

from pathlib import Path

from capstore.datasets.importer import ItemSpec
from capstore.datasets.records import FormatOptions, Records, pick_split, resolve_media
from capstore.inputs import read_json

WHAT = "MSR-VTT annotations"
LABELLED_SPLITS = True
SUFFIXES = (".mp4", ".webm", ".mkv", ".avi")


def parse(path: Path, options: FormatOptions) -> dict[str, list[ItemSpec]]:
    """``--format msrvtt``: every split of the file (or ``--split``); one item per video."""
    assert options.media is not None
    rec = Records(path, WHAT)
    data = read_json(path, "MSR-VTT file")
    videos = rec.list_of(data, "videos")
    sentences = rec.list_of(data, "sentences")
    specs: dict[str, ItemSpec] = {}
    split_of: dict[str, str] = {}
    for n, video in enumerate(videos):
        where = f"videos[{n}]"
        video_id = rec.ident(rec.require(video, "video_id", where), f"{where} video_id")
        if video_id in specs:
            raise rec.fail(f"video {video_id} appears twice in 'videos'")
        split_of[video_id] = rec.text(rec.require(video, "split", where), f"{where}.split")
        attributes = None
        if "category" in video:
            rec.ident(video["category"], f"{where} category")  # an integer (or a string): kept as it is
            attributes = {"category": video["category"]}
        specs[video_id] = ItemSpec(video_id, f"{video_id}.mp4",
                                   resolve_media(rec, options.media, *(f"{video_id}{s}" for s in SUFFIXES)),
                                   kind="video", attributes=attributes)
    for n, sentence in enumerate(sentences):
        where = f"sentences[{n}]"
        video_id = rec.ident(rec.require(sentence, "video_id", where), f"{where} video_id")
        caption = rec.text(rec.require(sentence, "caption", where), f"{where}.caption", empty=True)
        if video_id not in specs:
            raise rec.fail(f"{where} points at unknown video_id {video_id}")
        sen_id = sentence.get("sen_id")
        specs[video_id].references.append((caption, None if sen_id is None else rec.ident(sen_id, f"{where} sen_id")))
    splits: dict[str, list[ItemSpec]] = {}
    for video_id, spec in specs.items():
        splits.setdefault(split_of[video_id], []).append(spec)
    return pick_split(rec, splits, options.split, LABELLED_SPLITS)
