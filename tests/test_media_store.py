"""Videos and audio clips in the store: content-addressed by path + sha256 + size, a changed file caught by its sha."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from capstore.datasets import add_dataset
from capstore.errors import InputError
from capstore.methods.modalities import check_media, load_medium
from capstore.store import open_store
from capstore.store.images import read_image
from capstore.store.media import container_format, read_media, segment_centres, video_frames
from capstore.store.schema import Image, ImageBlob, ImageFile, Item, Split
from tests.media_files import write_json, write_video, write_wav


def _msrvtt(folder: Path, videos: list[str]) -> Path:
    for n, name in enumerate(videos):
        write_video(folder / "media" / f"{name}.mp4", n)
    return write_json(folder / "msrvtt.json", {
        "videos": [{"video_id": v, "split": "test"} for v in videos],
        "sentences": [{"video_id": v, "caption": "a square moves"} for v in videos]})


def test_the_same_video_in_two_datasets_is_one_row_kept_by_path_not_blob(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    add_dataset(store, "a", "msrvtt", _msrvtt(tmp_path / "a", ["video0"]), media=tmp_path / "a" / "media")
    add_dataset(store, "b", "msrvtt", _msrvtt(tmp_path / "b", ["clip9"]), media=tmp_path / "b" / "media")
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 1  # same bytes: one medium
        assert s.scalar(select(func.count()).select_from(ImageBlob)) == 0  # never as a blob
        assert s.scalar(select(func.count()).select_from(ImageFile)) == 2  # seen at two paths
        sha = s.scalar(select(Image.sha256))
        ref = read_media(s, sha)
        assert ref.kind == "video" and Path(ref.path).read_bytes()  # the first path that hashes right
        with pytest.raises(InputError, match="is a video, not an image"):
            read_image(s, sha)
    store.dispose()


def test_a_changed_file_under_the_same_path_is_caught_by_its_sha(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.db"))
    add_dataset(store, "m", "msrvtt", _msrvtt(tmp_path, ["video0"]), media=tmp_path / "media")
    path = tmp_path / "media" / "video0.mp4"
    original = path.read_bytes()
    with store.read() as s:
        sha = s.scalar(select(Image.sha256))
    changed = bytearray(original)
    changed[-1] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(changed))
    with store.read() as s, pytest.raises(InputError, match="its bytes changed since import"):
        read_media(s, sha)
    path.write_bytes(original + b"\0")  # another size: refused without hashing
    with store.read() as s, pytest.raises(InputError, match=f"{len(original) + 1} bytes, not {len(original)}"):
        load_medium(s, sha, "video")
    path.write_bytes(original)
    with store.read() as s:
        assert read_media(s, sha).path == str(path.resolve())
    store.dispose()


def test_missing_videos_need_the_flag_and_say_videos(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.db"))
    file = _msrvtt(tmp_path, ["video0", "video1"])
    (tmp_path / "media" / "video1.mp4").unlink()
    with pytest.raises(InputError, match="1 of 2 video files are missing .*first: video1.mp4.*without videos"):
        add_dataset(store, "m", "msrvtt", file, media=tmp_path / "media")
    summaries = add_dataset(store, "m", "msrvtt", file, media=tmp_path / "media", allow_missing=True)
    assert "1 items without video (first: video1.mp4)" in summaries[0].describe()
    store.dispose()


def test_containers_are_recognised_by_their_first_bytes(tmp_path: Path) -> None:
    video, clip = write_video(tmp_path / "v.mp4"), write_wav(tmp_path / "c.wav")
    assert container_format(video.read_bytes()[:16]) == "mp4"
    assert container_format(clip.read_bytes()[:16]) == "wav"
    assert container_format(b"fLaC" + bytes(12)) == "flac" and container_format(b"\x1a\x45\xdf\xa3" + bytes(12)) == "matroska"
    assert container_format(b"just some text..") is None


def test_frames_are_sampled_at_segment_centres(tmp_path: Path) -> None:
    assert segment_centres(12, 4) == [1, 4, 7, 10]
    assert segment_centres(2, 4) == [0, 0, 1, 1]  # fewer frames than asked: repeats
    store = open_store(str(tmp_path / "s.db"))
    add_dataset(store, "m", "msrvtt", _msrvtt(tmp_path, ["video0"]), media=tmp_path / "media")
    with store.read() as s:
        ref = read_media(s, s.scalar(select(Image.sha256)))
    frames = video_frames(ref, 4)
    assert frames.shape == (4, 32, 32, 3)
    # the drawn square moves 2 pixels a frame: its left edge tells which frame was taken
    columns = [int((f[12, :, 0] > 150).argmax()) for f in frames]
    assert columns == [2, 8, 14, 20]
    store.dispose()


def test_a_split_of_audio_refuses_image_methods_and_video_scorers(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.db"))
    write_wav(tmp_path / "media" / "a.wav")
    (tmp_path / "captions_evaluation.csv").write_text("file_name,caption_1\na.wav,a tone\n")
    add_dataset(store, "clotho", "clotho", tmp_path / "captions_evaluation.csv", media=tmp_path / "media")
    with store.read() as s:
        split_id = s.scalar(select(Split.id))
        assert check_media(s, "mils", "clap:/m", split_id, "clotho/evaluation") == "audio"
        with pytest.raises(InputError, match="--method blip2 captions images; dataset clotho/evaluation holds audio"):
            check_media(s, "blip2", None, split_id, "clotho/evaluation")
        with pytest.raises(InputError, match="scores videos; .* holds audio clips: use clap:NAME"):
            check_media(s, "mils", "xclip:/m", split_id, "clotho/evaluation")
        with pytest.raises(InputError, match="scores images; .* use clap:NAME"):
            check_media(s, "mils", "open_clip:ViT-B-32@openai", split_id, "clotho/evaluation")
        assert s.scalar(select(Item.attributes)) is None  # no attribute: SQL NULL, not JSON null
    store.dispose()


def test_a_copy_of_a_clip_elsewhere_is_read_when_the_first_path_is_gone(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.db"))
    for folder in ("one", "two"):
        write_wav(tmp_path / folder / "media" / "a.wav")
        (tmp_path / folder / "c.csv").write_text("file_name,caption_1\na.wav,a tone\n")
        add_dataset(store, folder, "clotho", tmp_path / folder / "c.csv", media=tmp_path / folder / "media")
    shutil.rmtree(tmp_path / "one")
    with store.read() as s:
        ref = read_media(s, s.scalar(select(Image.sha256)))
    assert ref.path == str((tmp_path / "two" / "media" / "a.wav").resolve())
    store.dispose()


def test_an_unreadable_clip_fails_its_item_in_one_line_and_a_readable_copy_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from capstore.store import media

    store = open_store(str(tmp_path / "s.db"))
    for folder in ("one", "two"):
        write_wav(tmp_path / folder / "media" / "a.wav")
        (tmp_path / folder / "c.csv").write_text("file_name,caption_1\na.wav,a tone\n")
        add_dataset(store, folder, "clotho", tmp_path / folder / "c.csv", media=tmp_path / folder / "media")
    unreadable = {str((tmp_path / f / "media" / "a.wav").resolve()) for f in ("one",)}

    def guarded_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) in unreadable:  # as chmod 000 does for any user but root (these tests may run as root)
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(media, "open", guarded_open, raising=False)
    with store.read() as s:
        sha = s.scalar(select(Image.sha256))
        assert read_media(s, sha).path == str((tmp_path / "two" / "media" / "a.wav").resolve())
        unreadable.add(str((tmp_path / "two" / "media" / "a.wav").resolve()))
        with pytest.raises(InputError, match=r"one/media/a.wav: Permission denied; .*two/media/a.wav: Permission denied"):
            read_media(s, sha)
    store.dispose()


def test_a_batchs_images_are_read_in_one_blob_query_and_each_bad_one_is_its_own_error(  # type: ignore[no-untyped-def]
        demo_store, tmp_path: Path) -> None:
    """``load_media`` (a batch of claimed items): the blobs in one query, an image kept as a file read
    from it, a corrupt or unknown one an InputError in its own place, the others loaded."""
    from sqlalchemy import event

    from capstore.backends.base import ImageRef
    from capstore.methods.modalities import load_media

    with demo_store.write() as s:
        good, corrupt, on_disk = s.scalars(select(Item.image_sha).order_by(Item.id).limit(3)).all()
        s.get(ImageBlob, corrupt).data = b"garbage bytes"
        blob = s.get(ImageBlob, on_disk)
        (tmp_path / "kept.png").write_bytes(bytes(blob.data))
        s.delete(blob)
        s.add(ImageFile(image_sha=on_disk, path=str(tmp_path / "kept.png")))
    statements: list[str] = []
    event.listen(demo_store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with demo_store.read() as s:
        refs = load_media(s, [(good, "image"), (corrupt, "image"), ("0" * 64, "image"), (on_disk, "image")])
    assert [type(r) for r in refs] == [ImageRef, InputError, InputError, ImageRef]
    assert refs[0].sha256 == good and refs[3].sha256 == on_disk and refs[3].data == (tmp_path / "kept.png").read_bytes()
    assert corrupt[:12] in str(refs[1]) and "not a readable image" in str(refs[1])
    assert "0" * 12 in str(refs[2]) and "not readable with matching bytes" in str(refs[2])
    assert sum("FROM image_blobs" in sql for sql in statements) == 3  # the batch's, then the two it missed alone
