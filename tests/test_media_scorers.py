"""The video and audio scorers (``xclip``, ``open_clip-frames``, ``clap``) on the tiny models and synthesized media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from capstore.backends.base import CallContext
from capstore.backends.preflight import check_backends
from capstore.backends.registry import load_backend
from capstore.errors import BackendError
from capstore.store import open_store
from capstore.store.content import sha256_bytes
from capstore.store.media import MediaRef, video_frames
from capstore.store.schema import Model, UsageEvent
from tests.media_files import truncate, write_video, write_wav, break_wav_header


def _ref(path: Path, kind: str) -> MediaRef:
    return MediaRef(sha256_bytes(path.read_bytes()), kind, path=str(path))


@pytest.fixture
def videos(tmp_path: Path) -> list[MediaRef]:
    good = [_ref(write_video(tmp_path / f"v{n}.mp4", n), "video") for n in range(2)]
    return [*good, _ref(truncate(write_video(tmp_path / "bad.mp4", 7)), "video")]


@pytest.fixture
def clips(tmp_path: Path) -> list[MediaRef]:
    good = [_ref(write_wav(tmp_path / f"c{n}.wav", n, seconds=0.5 + 2 * n, channels=1 + n), "audio") for n in range(2)]
    return [*good, _ref(break_wav_header(write_wav(tmp_path / "bad.wav", 7)), "audio")]


@pytest.mark.parametrize("role, media", [("video_scorer", "videos"), ("frames_scorer", "videos"),
                                         ("audio_scorer", "clips")])
def test_media_embeddings_are_normalised_cached_and_a_bad_medium_fails_alone(
        role: str, media: str, tiny_models, tmp_path: Path, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    refs: list[MediaRef] = request.getfixturevalue(media)
    store = open_store(str(tmp_path / "s.db"))
    scorer = load_backend("scorer", tiny_models.specs[role], store, device="cpu")
    rows, failed = scorer.encode_media(refs, CallContext(stage="test"))
    assert set(failed) == {refs[2].sha256} and refs[2].path.split("/")[-1] in failed[refs[2].sha256]
    assert np.allclose(np.linalg.norm(rows[:2], axis=1), 1.0, atol=1e-5) and not rows[2].any()
    assert not np.allclose(rows[0], rows[1])  # different media, different embeddings
    passes = scorer.forward_passes
    again, failed_again = scorer.encode_media(refs[:2], CallContext(stage="test"))
    assert scorer.forward_passes == passes and not failed_again  # from the cache, no decoding, no model
    assert np.array_equal(again, rows[:2])
    texts = scorer.encode_texts(["a square moves right", "a tone"])
    alone = scorer.encode_texts(["a tone"])
    assert np.allclose(texts[1], alone[0], atol=1e-5)  # a text's embedding does not depend on its batch
    assert np.allclose(scorer.score(refs[0], ["a square moves right", "a tone"]), texts @ rows[0], atol=1e-6)
    with store.read() as s:
        events = s.execute(select(UsageEvent.stage, UsageEvent.calls, UsageEvent.cached, UsageEvent.items)
                           .where(UsageEvent.stage == "test").order_by(UsageEvent.id)).all()
    assert [tuple(e) for e in events] == [("test", 1, 0, 3), ("test", 0, 2, 2)]
    store.dispose()


def test_sampling_settings_are_in_the_models_fingerprint(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = open_store(str(tmp_path / "s.db"))
    xclip = load_backend("scorer", tiny_models.specs["video_scorer"], store, device="cpu")
    frames = load_backend("scorer", tiny_models.specs["frames_scorer"], store, device="cpu")
    clap = load_backend("scorer", tiny_models.specs["audio_scorer"], store, device="cpu")
    with store.read() as s:
        config = {m.backend: m.config for m in s.scalars(select(Model))}
    assert config["xclip"]["frames"] == 4 and config["xclip"]["sampling"] == "segment-centres"  # the tiny model's 4
    assert config["open_clip-frames"]["frames"] == 8
    assert config["clap"]["sample_rate"] == 16000
    assert len({xclip.fingerprint, frames.fingerprint, clap.fingerprint}) == 3
    store.dispose()


def test_open_clip_frames_is_the_mean_of_normalised_frame_embeddings_and_shares_the_text_cache(
        tiny_models, videos: list[MediaRef], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from PIL import Image

    store = open_store(str(tmp_path / "s.db"))
    frames_scorer = load_backend("scorer", tiny_models.specs["frames_scorer"], store, device="cpu")
    rows, _ = frames_scorer.encode_media(videos[:1])
    clip = frames_scorer.clip
    pixels = torch.stack([clip.preprocess(Image.fromarray(f)) for f in video_frames(videos[0], 8)])
    with torch.inference_mode():
        emb = clip.model.encode_image(pixels).float()
    emb = emb / emb.norm(dim=-1, keepdim=True)
    mean = emb.mean(dim=0)
    assert np.allclose(rows[0], (mean / mean.norm()).numpy(), atol=1e-5)
    frames_scorer.encode_texts(["a red square"])
    image_scorer = load_backend("scorer", tiny_models.specs["scorer"], store, device="cpu")
    image_scorer.encode_texts(["a red square"])
    assert image_scorer.forward_passes == 0  # the pool of an image run is the pool of a video run
    store.dispose()


def test_a_long_clip_is_cropped_the_same_in_every_store(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    long = _ref(write_wav(tmp_path / "long.wav", 3, seconds=5.0), "audio")  # 5 s > the tiny CLAP's 2 s window
    state = np.random.get_state()
    rows = []
    for name in ("a", "b"):
        store = open_store(str(tmp_path / f"{name}.db"))
        rows.append(load_backend("scorer", tiny_models.specs["audio_scorer"], store, device="cpu").encode_media([long])[0])
        store.dispose()
    assert np.array_equal(rows[0], rows[1])
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state()[1:2], state[1:2]))  # numpy's generator restored


def test_preflight_checks_the_new_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="no such folder"):
        check_backends([("scorer", f"xclip:{tmp_path}/none")])
    with pytest.raises(BackendError, match="unknown model name 'ViT-Nope'"):
        check_backends([("scorer", "open_clip-frames:ViT-Nope@openai")])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE=1 forbids downloading"):
        check_backends([("scorer", "clap:someone/clap-not-cached")])
