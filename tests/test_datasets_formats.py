"""Every dataset format: small files written here (with media drawn or synthesized here) import as their
documented items, references and attributes; malformed variants are one line, exit 2, store unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import func, select

from capstore.datasets import FORMATS, add_dataset
from capstore.store import open_store
from capstore.store.content import get_texts
from capstore.store.schema import Image, Item, Reference, Split
from tests.bad_input import Case, check_case, invoke
from tests.media_files import write_json, write_png, write_video, write_wav

# -- the good files ---------------------------------------------------------------------------------


def karpathy(tmp: Path) -> Path:
    for n, folder in enumerate(("val2014", "val2014", "train2014")):
        write_png(tmp / "media" / folder / f"COCO_{n}.jpg", n)
    images = [{"filepath": folder, "filename": f"COCO_{n}.jpg", "cocoid": 100 + n, "split": split,
               "sentences": [{"raw": f"caption {n}.{k}", "sentid": 10 * n + k, "tokens": []} for k in range(2)]}
              for n, (folder, split) in enumerate((("val2014", "test"), ("val2014", "val"), ("train2014", "restval")))]
    return write_json(tmp / "dataset_coco.json", {"images": images, "dataset": "coco"})


def flickr(tmp: Path) -> Path:
    write_png(tmp / "media" / "1000092795.jpg", 1)
    return write_json(tmp / "dataset_flickr30k.json", {"images": [
        {"filename": "1000092795.jpg", "split": "test", "sentences": [{"raw": "Two young guys.", "sentid": 0}]}]})


def nocaps(tmp: Path, domain: str = "near-domain") -> Path:
    for n in range(3):
        write_png(tmp / "media" / f"n{n}.jpg", n)
    domains = ["in-domain", domain, "out-domain"]
    return write_json(tmp / "nocaps_val_4500_captions.json", {
        "images": [{"id": n, "file_name": f"n{n}.jpg", "open_images_id": f"oi{n}", "domain": domains[n]}
                   for n in range(3)],
        "annotations": [{"id": 10 * n + k, "image_id": n, "caption": f"a thing {n} {k}"} for n in range(3) for k in range(2)]})


def vizwiz(tmp: Path, rejected: object = True) -> Path:
    for n in range(2):
        write_png(tmp / "media" / f"VizWiz_val_{n:08d}.jpg", n)
    return write_json(tmp / "val.json", {
        "images": [{"id": n, "file_name": f"VizWiz_val_{n:08d}.jpg", "text_detected": n == 1} for n in range(2)],
        "annotations": [
            {"id": 1, "image_id": 0, "caption": "a can of soup", "is_rejected": False, "is_precanned": False},
            {"id": 2, "image_id": 0, "caption": "unreadable", "is_rejected": rejected, "is_precanned": False},
            {"id": 3, "image_id": 1, "caption": "Quality issues are too severe to recognize visual content.",
             "is_rejected": False, "is_precanned": True}]})


def textcaps(tmp: Path) -> Path:
    write_png(tmp / "media" / "train" / "aaa.jpg", 1)
    write_png(tmp / "media" / "train" / "bbb.jpg", 2)
    refs = {"aaa": ["a sign says stop", "a stop sign"], "bbb": ["a bottle of wine"]}
    data = [{"image_id": i, "image_path": f"train/{i}.jpg", "caption_str": c, "reference_strs": refs[i]}
            for i in ("aaa", "bbb") for c in refs[i]]
    return write_json(tmp / "TextCaps_0.1_val.json", {"dataset_type": "val", "data": data})


def cc3m(tmp: Path, rows: str | None = None) -> Path:
    write_png(tmp / "media" / "00000" / "000000000.jpg", 0)
    write_png(tmp / "media" / "00000" / "000000002.png", 2)
    path = tmp / "Validation_GCC-1.1.0-Validation.tsv"
    path.write_text(rows if rows is not None else
                    "a dog runs\thttp://x/0.jpg\nan old town\thttp://x/1.jpg\r\nthe sea\thttp://x/2.jpg\n")
    return path


def msrvtt(tmp: Path) -> Path:
    for n in range(2):
        write_video(tmp / "media" / f"video{n}.mp4", n)
    return write_json(tmp / "test_videodatainfo.json", {
        "videos": [{"video_id": f"video{n}", "split": "test" if n else "train", "category": n + 3, "id": n}
                   for n in range(2)],
        "sentences": [{"video_id": f"video{n}", "caption": f"a square moves {k}", "sen_id": 10 * n + k}
                      for n in range(2) for k in range(3)]})


CLOTHO_HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"


def clotho(tmp: Path, body: str | None = None, header: str = CLOTHO_HEADER) -> Path:
    for n in range(2):
        write_wav(tmp / "media" / f"clip {n}.wav", n)
    path = tmp / "clotho_captions_evaluation.csv"
    path.write_text(header + (body if body is not None else "".join(
        f'clip {n}.wav,"a tone, then a hiss",a beep,a hum,static,a whistle {n}\n' for n in range(2))))
    return path


def hf_dataset(tmp: Path, split_dict: bool = False) -> Path:
    import datasets
    from PIL import Image as PILImage

    from tests.media_files import png

    images = [PILImage.open(__import__("io").BytesIO(png(n))) for n in range(3)]
    part = datasets.Dataset.from_dict({"image": images, "caption": [["one a", "one b"], ["two"], []],
                                       "image_id": [7, 8, 9]}).cast_column("image", datasets.Image())
    data = datasets.DatasetDict({"test": part.select([0, 1]), "train": part.select([2])}) if split_dict else part
    data.save_to_disk(str(tmp / "hfdata"))
    return tmp / "hfdata"


def _db(tmp: Path) -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    db = str(tmp / "store.db")
    open_store(db).dispose()
    return db


def _add(db: str, name: str, fmt: str, file: Path, *extra: str) -> str:
    result = invoke(["dataset", "add", name, "--format", fmt, str(file), *extra, "--db", db])
    assert result.exit_code == 0, result.output
    return result.output


def _items(db: str, dataset: str) -> dict[str, tuple[str, dict | None, list[str], list[dict | None]]]:
    """external id -> (split, attributes, references, reference attributes)."""
    store = open_store(db)
    with store.read() as s:
        rows = s.execute(select(Item.id, Item.external_id, Split.name, Item.attributes).join(Split)).all()
        refs = s.execute(select(Reference.item_id, Reference.text_sha, Reference.attributes)
                         .order_by(Reference.item_id, Reference.ordinal)).all()
        texts = get_texts(s, [r.text_sha for r in refs])
    store.dispose()
    return {ext: (split, attrs, [texts[r.text_sha] for r in refs if r.item_id == iid],
                  [r.attributes for r in refs if r.item_id == iid]) for iid, ext, split, attrs in rows}


# -- good files import as documented ------------------------------------------------------------------


def test_karpathy_imports_every_split_at_once_with_raw_sentences(tmp_path: Path) -> None:
    db, file = _db(tmp_path), karpathy(tmp_path)
    out = _add(db, "coco-k", "karpathy", file, "--media", str(tmp_path / "media"))
    assert out.count("\n") == 3 and "coco-k/test: added 1 of 1 items, 2 of 2 references" in out
    items = _items(db, "coco-k")
    assert {k: v[0] for k, v in items.items()} == {"100": "test", "101": "val", "102": "restval"}
    assert items["102"][2] == ["caption 2.0", "caption 2.1"]
    assert "already imported" in _add(db, "coco-k", "karpathy", file, "--media", str(tmp_path / "media"))
    only = _db(tmp_path / "one")
    _add(only, "k", "karpathy", file, "--media", str(tmp_path / "media"), "--split", "test")
    assert set(_items(only, "k")) == {"100"}


def test_karpathy_flickr_ids_are_file_names(tmp_path: Path) -> None:
    db = _db(tmp_path)
    _add(db, "f30k", "karpathy", flickr(tmp_path), "--media", str(tmp_path / "media"))
    assert _items(db, "f30k") == {"1000092795": ("test", None, ["Two young guys."], [None])}


def test_nocaps_keeps_each_images_domain(tmp_path: Path) -> None:
    db = _db(tmp_path)
    out = _add(db, "nocaps", "nocaps", nocaps(tmp_path), "--media", str(tmp_path / "media"))
    assert "nocaps/val: added 3 of 3 items, 6 of 6 references, 3 new images" in out
    items = _items(db, "nocaps")
    assert {k: v[1] for k, v in items.items()} == {"0": {"domain": "in-domain"}, "1": {"domain": "near-domain"},
                                                  "2": {"domain": "out-domain"}}
    assert items["1"][2] == ["a thing 1 0", "a thing 1 1"]


def test_nocaps_test_file_without_annotations_gives_items_without_references(tmp_path: Path) -> None:
    file = nocaps(tmp_path)
    data = json.loads(file.read_text())
    del data["annotations"]
    test_file = write_json(tmp_path / "nocaps_test_image_info.json", data)
    db = _db(tmp_path)
    _add(db, "nocaps", "nocaps", test_file, "--media", str(tmp_path / "media"))
    assert {v[0] for v in _items(db, "nocaps").values()} == {"test"}
    assert all(v[2] == [] for v in _items(db, "nocaps").values())


def test_vizwiz_drops_rejected_and_keeps_precanned_as_an_attribute(tmp_path: Path) -> None:
    db = _db(tmp_path)
    _add(db, "vizwiz", "vizwiz", vizwiz(tmp_path), "--media", str(tmp_path / "media"))
    items = _items(db, "vizwiz")
    assert items["0"] == ("val", {"text_detected": False}, ["a can of soup"], [{"is_precanned": False}])
    assert items["1"][2:] == (["Quality issues are too severe to recognize visual content."], [{"is_precanned": True}])


def test_textcaps_groups_entries_by_image_with_reference_strs(tmp_path: Path) -> None:
    db = _db(tmp_path)
    _add(db, "textcaps", "textcaps", textcaps(tmp_path), "--media", str(tmp_path / "media"))
    assert _items(db, "textcaps") == {"aaa": ("val", None, ["a sign says stop", "a stop sign"], [None, None]),
                                      "bbb": ("val", None, ["a bottle of wine"], [None])}


def test_cc3m_reads_media_named_by_row_and_needs_the_flag_for_missing_ones(tmp_path: Path) -> None:
    db, file = _db(tmp_path), cc3m(tmp_path)
    args = ["dataset", "add", "cc3m", "--format", "cc3m", str(file), "--media", str(tmp_path / "media"), "--db", db]
    refused = invoke(args)
    assert refused.exit_code == 2 and "1 of 3 image files are missing" in refused.output and "row 1" in refused.output
    ok = invoke([*args, "--allow-missing-images"])
    assert ok.exit_code == 0 and "1 items without image (first: row 1)" in ok.output
    items = _items(db, "cc3m")
    assert items["1"] == ("val", {"url": "http://x/1.jpg"}, ["an old town"], [None])
    store = open_store(db)
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.image_sha.is_(None))) == 1
    store.dispose()


@pytest.mark.parametrize("split_dict", [False, True])
def test_hf_save_to_disk_dataset_with_image_and_caption_columns(tmp_path: Path, split_dict: bool) -> None:
    db = _db(tmp_path)
    out = _add(db, "hf", "hf", hf_dataset(tmp_path, split_dict))
    items = _items(db, "hf")
    assert {k: (v[0] if split_dict else "-", v[2]) for k, v in items.items()} == {
        "7": ("test" if split_dict else "-", ["one a", "one b"]), "8": ("test" if split_dict else "-", ["two"]),
        "9": ("train" if split_dict else "-", [])}
    assert "3 new images" in out or "2 new images" in out
    store = open_store(db)
    with store.read() as s:  # the Arrow files' bytes are kept as blobs: no image folder exists
        assert s.scalar(select(func.count()).select_from(Image)) == 3
    store.dispose()


def test_msrvtt_videos_are_items_by_path_sha_and_size(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    summaries = add_dataset(store, "msrvtt", "msrvtt", msrvtt(tmp_path), media=tmp_path / "media")
    assert [s.describe() for s in summaries] == [
        "msrvtt/train: added 1 of 1 items, 3 of 3 references, 1 new videos",
        "msrvtt/test: added 1 of 1 items, 3 of 3 references, 1 new videos"]
    with store.read() as s:
        rows = s.execute(select(Image.kind, Image.size_bytes, Image.format, Image.width, Image.duration_seconds)).all()
        attrs = dict(s.execute(select(Item.external_id, Item.attributes)).all())
    sizes = sorted((tmp_path / "media" / f"video{n}.mp4").stat().st_size for n in range(2))
    assert sorted(r.size_bytes for r in rows) == sizes
    assert {(r.kind, r.format, r.width) for r in rows} == {("video", "mp4", 32)} and all(r.duration_seconds for r in rows)
    assert attrs == {"video0": {"category": 3}, "video1": {"category": 4}}
    assert all(s.added_nothing for s in add_dataset(store, "msrvtt", "msrvtt", tmp_path / "test_videodatainfo.json",
                                                    media=tmp_path / "media"))
    store.dispose()


def test_clotho_audio_clips_with_five_captions(tmp_path: Path) -> None:
    db = _db(tmp_path)
    out = _add(db, "clotho", "clotho", clotho(tmp_path), "--media", str(tmp_path / "media"))
    assert "clotho/evaluation: added 2 of 2 items, 10 of 10 references, 2 new audio clips" in out
    items = _items(db, "clotho")
    assert items["clip 1.wav"][2] == ["a tone, then a hiss", "a beep", "a hum", "static", "a whistle 1"]


def test_every_format_has_a_test_here() -> None:
    tested = {"coco", "karpathy", "nocaps", "vizwiz", "textcaps", "cc3m", "hf", "msrvtt", "clotho"}
    assert set(FORMATS) == tested


def test_coco_through_format_is_the_coco_captions_import(tmp_path: Path) -> None:
    write_png(tmp_path / "media" / "a.png", 1)
    file = write_json(tmp_path / "c.json", {"images": [{"id": 1, "file_name": "a.png"}],
                                            "annotations": [{"id": 5, "image_id": 1, "caption": "a red square"}]})
    db = _db(tmp_path)
    _add(db, "c", "coco", file, "--media", str(tmp_path / "media"))
    legacy = invoke(["dataset", "add", "c", "--coco-captions", str(file), "--images", str(tmp_path / "media"),
                     "--db", db])
    assert legacy.exit_code == 0 and "already imported" in legacy.output
    assert _items(db, "c") == {"1": ("test", None, ["a red square"], [None])}


def test_the_options_of_dataset_add_name_one_importer() -> None:
    from capstore.datasets.add import ImportPlan, MissingInput, plan_import
    from capstore.errors import InputError

    f, d = Path("f.json"), Path("media")
    assert plan_import(f, "nocaps", None, d) == ImportPlan("format", "nocaps", f, d)
    assert plan_import(f, "hf", None, None) == ImportPlan("format", "hf", f, None)  # needs no media folder
    assert plan_import(None, None, f, d) == ImportPlan("coco", "coco", f, d)
    assert plan_import(None, "coco", f, d) == ImportPlan("coco", "coco", f, d)
    assert plan_import(None, None, None, d) == ImportPlan("folder", None, None, d)
    for args, message in [((f, "karpathy", f, d), "--coco-captions FILE is --format coco FILE"),
                          ((f, None, None, d), "give the format of f.json with --format")]:
        with pytest.raises(InputError, match=message) as refused:
            plan_import(*args)
        assert not isinstance(refused.value, MissingInput)
    for args, message in [((None, "nocaps", None, d), "Missing argument 'FILE'"),
                          ((None, None, f, None), "Missing option '--images'"),
                          ((None, None, None, None), "Missing option '--images'")]:
        with pytest.raises(MissingInput, match=message):
            plan_import(*args)


# -- malformed files: one line, exit 2, the store unchanged -----------------------------------------


def _edit(maker: Callable[[Path], Path], change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = maker(tmp)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return path
    return make


def _text(maker: Callable[..., Path], **kwargs: object) -> Callable[[Path], Path]:
    return lambda tmp: maker(tmp, **kwargs)


def _not_a_video(tmp: Path) -> Path:
    path = msrvtt(tmp)
    (tmp / "media" / "video1.mp4").write_text("this is not a video")
    return path


def _two_files_for_a_row(tmp: Path) -> Path:
    path = cc3m(tmp)
    write_png(tmp / "media" / "2.jpg", 5)
    return path


def _outside(maker: Callable[[Path], Path], name: Callable[[Path], str], key: Callable[[dict, str], None],
             write: Callable[[Path], object] = write_png) -> Callable[[Path], Path]:
    """``maker``'s file with one media name (``name(tmp)``) leading to a file that exists outside the media folder."""
    def make(tmp: Path) -> Path:
        path = maker(tmp)
        write(tmp / "outside" / "secret.jpg")
        data = json.loads(path.read_text())
        key(data, name(tmp))
        path.write_text(json.dumps(data))
        return path
    return make


def _add_args(fmt: str, media: bool = True, *extra: str) -> list[str]:
    return ["dataset", "add", "x", "--format", fmt, "{file}", *(["--media", "{tmp}/media"] if media else []),
            *extra, "--db", "{db}"]


CASES = [
    Case("unknown-format", _add_args("coco2"), ["unknown dataset format 'coco2'", "karpathy"], _text(karpathy)),
    Case("format-needs-media", _add_args("msrvtt", False), ["--format msrvtt needs --media", "videos"], msrvtt),
    Case("media-folder-missing", ["dataset", "add", "x", "--format", "clotho", "{file}", "--media", "{tmp}/nowhere",
                                  "--db", "{db}"], ["media folder", "nowhere", "does not exist"], clotho),
    Case("image-column-not-hf", _add_args("nocaps", True, "--image-column", "img"), ["--image-column", "hf"], nocaps),
    Case("file-without-format", ["dataset", "add", "x", "{file}", "--db", "{db}"], ["--format"], nocaps),
    Case("coco-no-annotations", _add_args("coco"), ["{file}", "not COCO captions", "has no 'annotations'"],
         lambda tmp: write_png(tmp / "media" / "a.png") and write_json(tmp / "c.json", {"images": []})),
    Case("karpathy-no-split", _add_args("karpathy"), ["{file}", "images[1] has no 'split'"],
         _edit(karpathy, lambda d: d["images"][1].pop("split"))),
    Case("karpathy-sentence-without-raw", _add_args("karpathy"), ["{file}", "images[0].sentences[1] has no 'raw'"],
         _edit(karpathy, lambda d: d["images"][0]["sentences"][1].pop("raw"))),
    Case("karpathy-unknown-split", _add_args("karpathy", True, "--split", "dev"),
         ["{file}", "no split 'dev'", "restval, test, val"], karpathy),
    Case("karpathy-malformed-json", _add_args("karpathy"), ["{file}", "malformed JSON at line 1"],
         lambda tmp: karpathy(tmp).with_name("dataset_coco.json").write_text('{"images": [')
         and tmp / "dataset_coco.json"),
    Case("nocaps-unknown-domain", _add_args("nocaps"), ["{file}", "images[1] domain is 'far-domain'", "in-domain"],
         _text(nocaps, domain="far-domain")),
    Case("nocaps-no-domain", _add_args("nocaps"), ["{file}", "not nocaps captions", "images[2] has no 'domain'"],
         _edit(nocaps, lambda d: d["images"][2].pop("domain"))),
    Case("vizwiz-rejected-not-a-flag", _add_args("vizwiz"), ["{file}", "annotations[1].is_rejected", "true or false"],
         _text(vizwiz, rejected="yes")),
    Case("vizwiz-unknown-image", _add_args("vizwiz"), ["{file}", "points at unknown image_id 9"],
         _edit(vizwiz, lambda d: d["annotations"][0].update(image_id=9))),
    Case("textcaps-no-data", _add_args("textcaps"), ["{file}", "not TextCaps", "no 'data'"],
         _edit(textcaps, lambda d: d.pop("data"))),
    Case("textcaps-no-image-path", _add_args("textcaps"), ["{file}", "data[2] has no 'image_path'"],
         _edit(textcaps, lambda d: d["data"][2].pop("image_path"))),
    Case("cc3m-three-fields", _add_args("cc3m"), ["{file}", "line 2 has 3 tab-separated fields"],
         _text(cc3m, rows="a dog\thttp://x/0.jpg\nan\told town\thttp://x/1.jpg\n")),
    Case("cc3m-two-files-one-row", _add_args("cc3m"), ["{file}", "two files in the media folder are row 2"],
         _two_files_for_a_row),
    Case("cc3m-not-utf8", _add_args("cc3m"), ["{file}", "not UTF-8", "line 2"],
         lambda tmp: cc3m(tmp, rows="") and (tmp / "bad.tsv").write_bytes(b"a\thttp://x\n\xff\thttp://y\n")
         and tmp / "bad.tsv"),
    Case("msrvtt-unknown-video", _add_args("msrvtt"), ["{file}", "sentences[0] points at unknown video_id video9"],
         _edit(msrvtt, lambda d: d["sentences"][0].update(video_id="video9"))),
    Case("msrvtt-videos-not-a-list", _add_args("msrvtt"), ["{file}", "videos is not a list"],
         _edit(msrvtt, lambda d: d.update(videos={"video0": {}}))),
    Case("msrvtt-not-a-video", _add_args("msrvtt"), ["video1.mp4", "is not a video file"], _not_a_video),
    Case("clotho-wrong-header", _add_args("clotho"), ["{file}", "its header is 'name,text'"],
         _text(clotho, header="name,text\n", body="a.wav,x\n")),
    Case("clotho-short-row", _add_args("clotho"), ["{file}", "line 3 has 2 fields"],
         _text(clotho, body='clip 0.wav,a,b,c,d,e\nclip 1.wav,"a, b"\n')),
    Case("clotho-unterminated-quote", _add_args("clotho"), ["{file}", "malformed CSV"],
         _text(clotho, body='clip 0.wav,"a,b,c,d,e\n')),
    Case("clotho-missing-clip", _add_args("clotho"), ["1 of 3 audio files are missing", "clip 9.wav", "audio clips"],
         _text(clotho, body="".join(f"clip {n}.wav,a,b,c,d,e\n" for n in (0, 1, 9)))),
    Case("hf-no-caption-column", ["dataset", "add", "x", "--format", "hf", "{file}", "--caption-column", "text",
                                  "--db", "{db}"], ["no column 'text'", "--caption-column", "image, caption"],
         hf_dataset),
    Case("hf-not-a-dataset", ["dataset", "add", "x", "--format", "hf", "{file}", "--db", "{db}"],
         ["cannot load dataset", "{file}"], lambda tmp: (tmp / "plain").mkdir() or tmp / "plain"),
    Case("hf-hub-name-unreachable", ["dataset", "add", "x", "--format", "hf", "someone/not-a-dataset", "--db", "{db}"],
         ["dataset someone/not-a-dataset"], lambda tmp: tmp, env={"HF_ENDPOINT": "http://127.0.0.1:9"}),
    Case("coco-captions-and-another-format", ["dataset", "add", "x", "--format", "karpathy", "--coco-captions", "{file}",
                                              "--images", "{tmp}/media", "--db", "{db}"],
         ["--coco-captions FILE is --format coco FILE"], karpathy),
    Case("hf-missing-folder", ["dataset", "add", "x", "--format", "hf", "{tmp}/no/such", "--db", "{db}"],
         ["dataset folder", "no/such", "does not exist"], lambda tmp: tmp),
    Case("nocaps-name-leaves-the-media-folder", _add_args("nocaps"),
         ["{file}", "'../outside/secret.jpg' leads out of the media folder"],
         _outside(nocaps, lambda tmp: "../outside/secret.jpg", lambda d, n: d["images"][1].update(file_name=n))),
    Case("karpathy-absolute-name", _add_args("karpathy"), ["{file}", "secret.jpg", "leads out of the media folder"],
         _outside(karpathy, lambda tmp: str(tmp / "outside"), lambda d, n: d["images"][0].update(filepath=n,
                                                                                                 filename="secret.jpg"))),
    Case("textcaps-name-leaves-the-media-folder", _add_args("textcaps"), ["{file}", "leads out of the media folder"],
         _outside(textcaps, lambda tmp: "../outside/secret.jpg", lambda d, n: d["data"][0].update(image_path=n))),
    Case("clotho-name-leaves-the-media-folder", _add_args("clotho"), ["{file}", "'../x.wav' leads out"],
         lambda tmp: write_wav(tmp / "x.wav") and _text(clotho, body="../x.wav,a,b,c,d,e\n")(tmp)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_one_line_and_the_store_unchanged(case: Case, tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    store = open_store(db)
    add_dataset(store, "kept", "nocaps", nocaps(tmp_path / "kept"), media=tmp_path / "kept" / "media")
    store.dispose()
    work = tmp_path / "case"
    work.mkdir()
    check_case(case, db, work)
