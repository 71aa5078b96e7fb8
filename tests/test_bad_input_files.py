"""Pathological files and names: each refused in one line (exit 2), the store unchanged.

Every command that reads a user file goes through ``capstore.inputs`` (``dataset add`` with a COCO
captions file or an image folder, ``import-results``). The cases whose culprit would reach the
database (NUL, lone surrogates, names that are not UTF-8) run on SQLite and on PostgreSQL: SQLite
would store a NUL that PostgreSQL refuses, and neither driver can encode a lone surrogate.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

import pytest

from capstore.errors import InputError
from capstore.inputs import read_json, read_text
from tests.bad_input import Case, check_case, copy_sqlite, invoke
from tests.conftest import make_pg_url

NOT_UTF8 = os.fsdecode(b"\xff")  # what Python makes of the byte 0xff in a file name or argv


# ---- culprit files ---------------------------------------------------------------------------------

def _png(colour: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (colour, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _bomb_png() -> bytes:
    """A PNG header claiming 60000 x 60000 pixels: Pillow refuses it as a decompression bomb on open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _folder(tmp: Path, name: str | bytes = "imgs", images: dict[str, bytes] | None = None) -> Path:
    folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp), os.fsencode(name))))
    folder.mkdir(exist_ok=True)
    for file_name, data in (images if images is not None else {"a.png": _png(0), "b.png": _png(80)}).items():
        (folder / file_name).write_bytes(data)
    return folder


def _coco_json(captions: list[str] | None = None) -> dict:
    captions = captions or ["a red square", "a blue circle"]
    return {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "annotations": [{"id": 10 + n, "image_id": 1 + n % 2, "caption": c} for n, c in enumerate(captions)]}


def coco(raw: bytes | str, images: dict[str, bytes] | None = None, folder: str | bytes = "imgs"):  # type: ignore[no-untyped-def]
    """A maker: the images folder ``{tmp}/imgs`` and a COCO captions file holding ``raw``."""
    def make(tmp: Path) -> Path:
        _folder(tmp, folder, images)
        path = tmp / "captions.json"
        path.write_bytes(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
        return path
    return make


def coco_images(images: dict[str, bytes]):  # type: ignore[no-untyped-def]
    return coco(json.dumps(_coco_json()), images)


def results(raw: bytes | str):  # type: ignore[no-untyped-def]
    def make(tmp: Path) -> Path:
        path = tmp / "results.json"
        path.write_bytes(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
        return path
    return make


def folder_with(images: dict[str, bytes], links: dict[str, str] | None = None, name: str | bytes = "imgs"):  # type: ignore[no-untyped-def]
    """A maker: an image folder with ``images`` and symlinks ``links`` (name -> target)."""
    def make(tmp: Path) -> Path:
        folder = _folder(tmp, name, images)
        for link, target in (links or {}).items():
            os.symlink(target, folder / link)
        return folder
    return make


def fifo(name: str, inside: str | None = None):  # type: ignore[no-untyped-def]
    def make(tmp: Path) -> Path:
        folder = _folder(tmp)
        path = (folder if inside else tmp) / name
        os.mkfifo(path)
        return folder if inside else path
    return make



def loop(name: str):  # type: ignore[no-untyped-def]
    def make(tmp: Path) -> Path:
        _folder(tmp)
        path = tmp / name
        os.symlink(name, path)  # points at itself
        return path
    return make


def nested_loop():  # type: ignore[no-untyped-def]
    """imgs/inner/up -> .. : a loop one level down."""
    def make(tmp: Path) -> Path:
        folder = _folder(tmp)
        inner = folder / "inner"
        inner.mkdir()
        (inner / "c.png").write_bytes(_png(3))
        os.symlink("..", inner / "up")
        return folder
    return make


def deep(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def _nul_byte_coco() -> bytes:
    return json.dumps(_coco_json(), indent=1).replace('"a blue circle"', '"a blue\x00 circle"').encode()


ADD_COCO = ["dataset", "add", "c", "--coco-captions", "{file}", "--images", "{tmp}/imgs", "--db", "{db}"]
ADD_FOLDER = ["dataset", "add", "f", "--images", "{file}", "--db", "{db}"]
IMPORT = ["import-results", "{file}", "--dataset", "demo", "--label", "L", "--db", "{db}"]
GOOD_RESULTS = json.dumps([{"image_id": "demo-00", "caption": "a shape"}])
DIGITS = "7" * 5000

# (case, reaches the database: also run on PostgreSQL)
CASES: list[tuple[Case, bool]] = [
    # COCO captions files
    (Case("coco-nested-5000-deep", ADD_COCO, ["{file}", "nested too deeply"], coco(deep(5000))), False),
    (Case("coco-nested-deep-object", ADD_COCO, ["{file}", "nested too deeply"],
          coco('{"images": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}")), False),
    (Case("coco-lone-surrogate-caption", ADD_COCO, ["{file}", "annotations[1].caption", "lone surrogate"],
          coco(json.dumps(_coco_json(["ok", "bad \ud800 text"])))), True),
    (Case("coco-lone-low-surrogate-file-name", ADD_COCO, ["{file}", "images[0].file_name", "lone surrogate"],
          coco(json.dumps(_coco_json()).replace("a.png", "\\udc00.png"))), True),
    (Case("coco-nul-escape-caption", ADD_COCO, ["{file}", "annotations[0].caption", "NUL"],
          coco(json.dumps(_coco_json(["nul \u0000 here", "ok"])))), True),
    (Case("coco-nul-byte-in-file", ADD_COCO, ["{file}", "NUL", "line 21"], coco(_nul_byte_coco())), True),
    (Case("coco-image-id-5000-digits", ADD_COCO, ["{file}", "5000 digits", "line 1"],
          coco(json.dumps(_coco_json()).replace('"id": 1,', f'"id": {DIGITS},', 1))), False),
    (Case("coco-image-id-nan", ADD_COCO, ["{file}", "NaN is not a JSON number"],
          coco(json.dumps(_coco_json()).replace('"id": 1,', '"id": NaN,', 1))), False),
    (Case("coco-image-id-float", ADD_COCO, ["{file}", "images[0] id", "integer or a string"],
          coco(json.dumps(_coco_json()).replace('"id": 1,', '"id": 1.5,', 1))), False),
    (Case("coco-number-overflows-float", ADD_COCO, ["{file}", "too large for a float"],
          coco(json.dumps({**_coco_json(), "info": {"year": 1e308}}).replace("1e+308", "1e999"))), False),
    (Case("coco-not-utf8", ADD_COCO, ["{file}", "not UTF-8", "line 1"], coco(b'{"images": ["\xff"]}')), False),
    (Case("coco-utf16", ADD_COCO, ["{file}", "not UTF-8"],
          coco(json.dumps(_coco_json()).encode("utf-16"))), False),
    (Case("coco-empty-file", ADD_COCO, ["{file}", "malformed JSON at line 1 column 1"], coco(b"")), False),
    (Case("coco-symlink-loop", ADD_COCO, ["{file}", "symbolic links"], loop("captions.json")), False),
    (Case("coco-fifo", ADD_COCO, ["{file}", "not a regular file"], fifo("captions.json")), False),
    (Case("coco-folder-as-file", ["dataset", "add", "c", "--coco-captions", "{tmp}", "--images", "{tmp}",
                                  "--db", "{db}"], ["{tmp}", "a folder"]), False),
    (Case("coco-zero-byte-image", ADD_COCO, ["b.png", "empty (0 bytes)"],
          coco_images({"a.png": _png(), "b.png": b""})), False),
    (Case("coco-truncated-png", ADD_COCO, ["a.png", "not a readable image"],
          coco_images({"a.png": _png()[:60], "b.png": _png(9)})), False),
    (Case("coco-truncated-jpeg", ADD_COCO, ["a.png", "not a readable image", "truncated"],
          coco_images({"a.png": _jpeg()[: len(_jpeg()) // 2], "b.png": _png(9)})), False),
    (Case("coco-decompression-bomb", ADD_COCO, ["b.png", "too large to decode"],
          coco_images({"a.png": _png(), "b.png": _bomb_png()})), False),
    (Case("coco-images-folder-not-utf8", ["dataset", "add", "c", "--coco-captions", "{file}", "--images",
                                          f"{{tmp}}/{NOT_UTF8}", "--db", "{db}"], ["images folder", "\\xff"],
          coco(json.dumps(_coco_json()), folder=b"\xff")), True),
    # image folders
    (Case("folder-file-name-not-utf8", ADD_FOLDER, ["\\xff.png", "not valid UTF-8"],
          folder_with({"a.png": _png(), os.fsdecode(b"\xff.png"): _png(50)})), True),
    (Case("folder-name-not-utf8", ADD_FOLDER, ["images folder", "\\xff", "not valid UTF-8"],
          folder_with({"a.png": _png()}, name=b"\xff")), True),
    (Case("folder-symlink-loop-to-itself", ADD_FOLDER, ["symlink loop", "loop"],
          folder_with({"a.png": _png()}, {"loop": "."})), False),
    (Case("folder-symlink-loop-to-parent", ADD_FOLDER, ["symlink loop", "inner/up"], nested_loop()), False),
    (Case("folder-image-symlink-to-itself", ADD_FOLDER, ["self.png", "symlink loop"],
          folder_with({"a.png": _png()}, {"self.png": "self.png"})), False),
    (Case("folder-broken-symlink", ADD_FOLDER, ["gone.png", "broken symlink"],
          folder_with({"a.png": _png()}, {"gone.png": "nowhere.png"})), False),
    (Case("folder-zero-byte-image", ADD_FOLDER, ["b.png", "empty (0 bytes)"],
          folder_with({"a.png": _png(), "b.png": b""})), False),
    (Case("folder-truncated-png", ADD_FOLDER, ["b.png", "not a readable image"],
          folder_with({"a.png": _png(), "b.png": _png(7)[:-20]})), False),
    (Case("folder-truncated-jpeg", ADD_FOLDER, ["b.jpg", "truncated"],
          folder_with({"a.png": _png(), "b.jpg": _jpeg()[: len(_jpeg()) * 2 // 3]})), False),
    (Case("folder-text-named-png", ADD_FOLDER, ["b.png", "not a readable image"],
          folder_with({"a.png": _png(), "b.png": b"<html>no picture</html>"})), False),
    (Case("folder-decompression-bomb", ADD_FOLDER, ["b.png", "too large to decode"],
          folder_with({"a.png": _png(), "b.png": _bomb_png()})), False),
    (Case("folder-fifo-named-png", ADD_FOLDER, ["pipe.png", "not a regular file"], fifo("pipe.png", "imgs")),
     False),
    # COCO results files
    (Case("results-nested-5000-deep", IMPORT, ["{file}", "nested too deeply"], results(deep(5000))), False),
    (Case("results-lone-surrogate-caption", IMPORT, ["{file}", "[0].caption", "lone surrogate"],
          results('[{"image_id": "demo-00", "caption": "x \\ud83d y"}]')), True),
    (Case("results-lone-surrogate-key", IMPORT, ["{file}", "key", "lone surrogate"],
          results('[{"image_id": "demo-00", "caption": "x", "\\udfff": 1}]')), True),
    (Case("results-nul-escape-caption", IMPORT, ["{file}", "[1].caption", "NUL"],
          results('[{"image_id": "demo-00", "caption": "x"}, {"image_id": "demo-01", "caption": "a\\u0000b"}]')),
     True),
    (Case("results-nul-byte", IMPORT, ["{file}", "NUL", "line 2"],
          results(b'[{"image_id": "demo-00",\n "caption": "a\x00b"}]')), True),
    (Case("results-image-id-5000-digits", IMPORT, ["{file}", "5000 digits"],
          results(f'[{{"image_id": {DIGITS}, "caption": "x"}}]')), False),
    (Case("results-image-id-infinity", IMPORT, ["{file}", "Infinity is not a JSON number"],
          results('[{"image_id": Infinity, "caption": "x"}]')), False),
    (Case("results-not-utf8", IMPORT, ["{file}", "not UTF-8"], results(b'[{"caption": "\xc3\x28"}]')), False),
    (Case("results-symlink-loop", IMPORT, ["{file}", "symbolic links"], loop("results.json")), False),
    (Case("results-fifo", IMPORT, ["{file}", "not a regular file"], fifo("results.json")), False),
    (Case("results-label-with-nul", ["import-results", "{file}", "--dataset", "demo", "--label", "a\x00b",
                                     "--db", "{db}"], ["--label", "NUL"], results(GOOD_RESULTS)), True),
    (Case("results-label-not-utf8", ["import-results", "{file}", "--dataset", "demo", "--label", NOT_UTF8,
                                     "--db", "{db}"], ["--label", "lone surrogate"], results(GOOD_RESULTS)), True),
    # names typed on the command line
    (Case("dataset-name-with-nul", ["dataset", "add", "a\x00b", "--images", "{file}", "--db", "{db}"],
          ["dataset name", "NUL"], folder_with({"a.png": _png()})), True),
    (Case("dataset-name-not-utf8", ["dataset", "add", f"x{NOT_UTF8}", "--images", "{file}", "--db", "{db}"],
          ["dataset name", "lone surrogate"], folder_with({"a.png": _png()})), True),
    (Case("split-name-not-utf8", ["dataset", "add", "x", "--images", "{file}", "--split", NOT_UTF8,
                                  "--db", "{db}"], ["split name"], folder_with({"a.png": _png()})), True),
    (Case("dataset-show-name-with-nul", ["dataset", "show", "de\x00mo", "--db", "{db}"], ["dataset name", "NUL"]),
     True),
    (Case("import-results-dataset-not-utf8", ["import-results", "{file}", "--dataset", NOT_UTF8, "--label", "L",
                                              "--db", "{db}"], ["dataset name"], results(GOOD_RESULTS)), True),
    (Case("price-key-with-nul", ["prices", "set", "image", "gpt\x00x", "1", "--db", "{db}"], ["price key", "NUL"]),
     True),
    (Case("price-source-not-utf8", ["prices", "set", "image", "x", "1", "--source", NOT_UTF8, "--db", "{db}"],
          ["--source"]), True),
    (Case("price-nan", ["prices", "set", "image", "x", "nan", "--db", "{db}"], ["nan", "finite"]), False),
    (Case("price-inf", ["prices", "set", "device_hour", "x", "inf", "--db", "{db}"], ["inf", "finite"]), False),
    (Case("price-negative", ["prices", "set", "--db", "{db}", "image", "x", "--", "-0.5"], ["-0.5", ">= 0"]), False),
]


def _params() -> list:  # type: ignore[type-arg]
    out = []
    for case, reaches_db in CASES:
        out.append(pytest.param(case, "sqlite", id=f"{case.id}-sqlite"))
        if reaches_db:
            out.append(pytest.param(case, "postgresql", id=f"{case.id}-postgresql", marks=pytest.mark.postgres))
    return out


@pytest.fixture(scope="module")
def seeded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store holding the demo dataset (copied for each case)."""
    db = str(tmp_path_factory.mktemp("seeded") / "seed.db")
    assert invoke(["dataset", "demo", "--db", db]).exit_code == 0
    return db


@pytest.fixture(scope="module")
def seeded_pg() -> Iterator[str]:
    """One PostgreSQL schema holding the demo dataset for all cases: each is checked to leave it unchanged."""
    urls = make_pg_url()
    db = next(urls)
    try:
        assert invoke(["dataset", "demo", "--db", db]).exit_code == 0
        yield db
    finally:
        urls.close()


@pytest.mark.parametrize("case, engine", _params())
def test_pathological_input_is_refused_and_nothing_is_written(case: Case, engine: str, seeded_sqlite: str,
                                                               request: pytest.FixtureRequest, tmp_path: Path) -> None:
    db = copy_sqlite(seeded_sqlite, tmp_path / "store.db") if engine == "sqlite" \
        else request.getfixturevalue("seeded_pg")
    check_case(case, db, tmp_path)


def test_the_table_is_big_enough() -> None:
    ids = [c.id for c, _ in CASES]
    assert len(ids) >= 45 and len(set(ids)) == len(ids)
    assert sum(1 for _, db in CASES if db) >= 15


# ---- the same inputs, well-formed, go through -------------------------------------------------------

def test_a_well_formed_import_of_each_kind_goes_through(seeded_sqlite: str, tmp_path: Path) -> None:
    """The refusals above come from the culprit alone: the same commands with good files succeed."""
    db = copy_sqlite(seeded_sqlite, tmp_path / "store.db")
    path = coco(json.dumps(_coco_json(["a red square \U0001F600", "a blue circle"])))(tmp_path)
    ok = invoke(["dataset", "add", "c", "--coco-captions", str(path), "--images", str(tmp_path / "imgs"), "--db", db])
    assert ok.exit_code == 0 and "added 2 of 2 items" in ok.output, ok.output
    jpeg = folder_with({"a.png": _png(), "b.jpg": _jpeg()}, name="good")(tmp_path)
    ok = invoke(["dataset", "add", "f", "--images", str(jpeg), "--db", db])
    assert ok.exit_code == 0 and "added 2 of 2 items" in ok.output, ok.output
    res = results(GOOD_RESULTS)(tmp_path)
    ok = invoke(["import-results", str(res), "--dataset", "demo", "--label", "L", "--db", db])
    assert ok.exit_code == 0 and "imported" in ok.output, ok.output


def test_symlinked_folders_are_followed_once(seeded_sqlite: str, tmp_path: Path) -> None:
    """A symlink to a folder outside is followed (its images imported under the link's name)."""
    db = copy_sqlite(seeded_sqlite, tmp_path / "store.db")
    outside = _folder(tmp_path, "outside", {"o.png": _png(1)})
    folder = folder_with({"a.png": _png()}, {"more": str(outside)}, name="main")(tmp_path)
    ok = invoke(["dataset", "add", "f", "--images", str(folder), "--db", db])
    assert ok.exit_code == 0 and "added 2 of 2 items" in ok.output, ok.output
    shown = invoke(["dataset", "show", "f", "--db", db]).output
    assert "item a.png" in shown and "item more/o.png" in shown


def test_a_folder_nested_deeper_than_the_recursion_limit_is_walked(tmp_path: Path) -> None:
    """300 levels under a recursion limit of 150 (pytest's own clean-up recurses: keep the tree shallow)."""
    import sys

    from capstore.datasets.folder import image_files

    root = tmp_path / "deep"
    leaf = root.joinpath(*["d"] * 300)
    leaf.mkdir(parents=True)
    (leaf / "x.png").write_bytes(_png())
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(150)
    try:
        found = image_files(root)
    finally:
        sys.setrecursionlimit(limit)
    assert found == [leaf / "x.png"]


# ---- the reader the pool and prompt files use --------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    (b"line one\nline \x00two\n", "NUL character at line 2"),
    (b"fine\n\xff\xfe\n", "not UTF-8 text: invalid start byte at line 2"),
    (b"\xed\xa0\x80\n", "not UTF-8 text"),  # an encoded lone surrogate (CESU-8) is not UTF-8
])
def test_read_text_refuses_what_cannot_be_stored(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "pool.txt"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=message) as info:
        read_text(path, "pool file")
    assert str(path) in str(info.value) and str(info.value).startswith("pool file")


def test_read_text_names_special_files_and_loops(tmp_path: Path) -> None:
    loop_path = tmp_path / "loop.txt"
    os.symlink("loop.txt", loop_path)
    os.mkfifo(tmp_path / "pipe.txt")
    for path, message in ((loop_path, "symbolic links"), (tmp_path / "pipe.txt", "not a regular file"),
                          (tmp_path, "a folder"), (tmp_path / "none.txt", "No such file"),
                          (Path("/dev/zero"), "not a regular file")):
        with pytest.raises(InputError, match=message):
            read_text(path, "prompt file")


def test_read_text_keeps_good_text_and_drops_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_bytes("\ufeffDescribe {descriptions} — über 😀\n".encode())
    assert read_text(path, "prompt file") == "Describe {descriptions} — über 😀\n"


def test_read_json_keeps_surrogate_pairs_and_big_but_readable_integers(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text('{"a": "\\ud83d\\ude00", "n": ' + "9" * 4000 + "}")
    data = read_json(path, "file")
    assert data["a"] == "\U0001F600" and len(str(data["n"])) == 4000
