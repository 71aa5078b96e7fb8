"""Local backends on the tiny models: loading through the real code path, caching, accounting."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from capstore.backends.base import CallContext, ImageRef
from capstore.backends.registry import load_backend, parse_spec
from capstore.errors import BackendError, InputError
from capstore.store.schema import GenerationCache, Model, UsageEvent
from tests.conftest import demo_images


def _usage(store) -> list[UsageEvent]:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return list(s.scalars(select(UsageEvent).order_by(UsageEvent.id)))


def test_scorer_cache_hit_runs_no_forward_pass(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    images = demo_images(demo_store, 4)
    texts = ["a red circle", "two blue squares", "a red circle"]
    first = scorer.score(images[0], texts)
    passes = scorer.forward_passes
    assert passes == 2 and first.shape == (3,) and np.isclose(first[0], first[2])
    again = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")  # a new process, same store
    assert np.allclose(again.score(images[0], texts), first)
    assert again.forward_passes == 0
    last_two = _usage(demo_store)[-2:]
    assert all(e.calls == 0 and e.cached > 0 and e.device_seconds == 0.0 for e in last_two)
    norms = np.linalg.norm(again.encode_texts(texts), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_same_weights_by_two_paths_share_the_model_row(demo_store, tiny_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "clip-copy"
    shutil.copytree(tiny_models.clip, copy)
    a = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    b = load_backend("scorer", f"open_clip:{copy}", demo_store, device="cpu")
    assert a.model_id == b.model_id
    from safetensors.torch import load_file, save_file

    weights = load_file(str(copy / "open_clip_model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] + 1.0
    save_file(weights, str(copy / "open_clip_model.safetensors"))
    c = load_backend("scorer", f"open_clip:{copy}", demo_store, device="cpu")
    assert c.model_id != a.model_id  # other weights under the same path never share a cache


def test_generator_replays_cache_and_is_batch_independent(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    gen = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu", max_new_tokens=12)
    outs = gen.generate(["describe a red circle", "describe two squares", "hello"], [1, 2, 3], CallContext(run_id=None))
    # (random weights never end an answer: each is cut at 12 tokens, its raw output kept whole)
    assert all(o.ok and o.output and o.tokens_out > 0 and o.tokens_in > 0 for o in outs)
    assert not any(o.cached for o in outs) and gen.model_calls == 1
    with demo_store.write() as s:  # forget the cache: a prompt alone in its batch must sample the same text
        s.execute(GenerationCache.__table__.delete())
    alone = gen.generate(["describe two squares"], [2])
    assert alone[0].output == outs[1].output and alone[0].text == outs[1].text and not alone[0].cached
    replay = gen.generate(["describe two squares"], [2])
    assert (replay[0].output, replay[0].text, replay[0].truncated) == (outs[1].output, outs[1].text, outs[1].truncated)
    assert replay[0].cached
    assert _usage(demo_store)[-1].calls == 0  # the replay made no model call
    other_seed = gen.generate(["describe two squares"], [99])
    assert not other_seed[0].cached


@pytest.mark.parametrize("name", ["blip2", "llava"])
def test_captioners_build_load_caption_and_cache(demo_store, tiny_models, name: str) -> None:  # type: ignore[no-untyped-def]
    cap = load_backend("captioner", tiny_models.specs[name], demo_store, device="cpu", max_new_tokens=8)
    images = demo_images(demo_store, 3)
    outs = cap.caption(images, [0, 0, 0])
    assert all(o.ok and o.tokens_out > 0 for o in outs) and cap.model_calls == 1
    assert all(o.cached for o in cap.caption(images, [0, 0, 0])) and cap.model_calls == 1
    sampled = load_backend("captioner", tiny_models.specs[name], demo_store, device="cpu", max_new_tokens=8,
                           num_candidates=3)
    many = sampled.caption(images[:1], [7])
    assert len(many[0].extra["candidates"]) == 3
    bad = sampled.caption([ImageRef(sha256="0" * 64, data=b"not an image")], [0])
    assert bad[0].error_kind == "corrupt_image" and not bad[0].ok
    with demo_store.read() as s:
        assert s.scalar(select(func.count()).select_from(GenerationCache).where(GenerationCache.image_sha == "0" * 64)) == 0


def test_usage_events_carry_device_and_counts(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    scorer.encode_images(demo_images(demo_store, 5), CallContext(run_id=None, worker="w1"))
    event = _usage(demo_store)[-1]
    assert (event.stage, event.device_type, event.images, event.calls, event.worker) == ("encode_image", "cpu", 5, 1, "w1")
    assert event.device_seconds > 0 and event.wall_seconds >= event.device_seconds * 0.5
    with demo_store.read() as s:
        assert s.get(Model, event.model_id).kind == "scorer"


def test_bad_specs_and_missing_vllm(demo_store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="unknown backend 'nope'; available: fake, hf, openai, vllm"):
        parse_spec("generator", "nope:x")
    with pytest.raises(InputError, match="expected BACKEND:MODEL"):
        parse_spec("scorer", "ViT-B-32")
    with pytest.raises(BackendError, match="vllm"):
        load_backend("generator", "vllm:some/model", demo_store)
    with pytest.raises(BackendError, match="cannot load open_clip model"):
        load_backend("scorer", "open_clip:no-such-model@x", demo_store, device="cpu")
    with pytest.raises(BackendError, match="no CUDA device"):
        load_backend("scorer", "open_clip:ViT-B-32@openai", demo_store, device="cuda")


@pytest.fixture(scope="module")
def tiny_blip2_t5(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A BLIP-2 whose language model is a (tiny) T5: an encoder-decoder, like blip2-flan-t5-xl."""
    import torch
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, T5Config)

    from capstore.backends.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("blip2-t5")
    tok = build_tokenizer(out)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=16).to_dict(),
        qformer_config=Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, encoder_hidden_size=32).to_dict(),
        text_config=T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1,
                             num_decoder_layers=1, decoder_start_token_id=tok.pad_token_id, **ids).to_dict(),
        num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(cfg).save_pretrained(out)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok,
                   num_query_tokens=4).save_pretrained(out)
    return f"blip2:{out}"


def test_blip2_with_an_encoder_decoder_lm_captions_with_the_decoder_tokens(demo_store, tiny_blip2_t5) -> None:  # type: ignore[no-untyped-def]
    import torch

    from capstore.store.images import decode_image

    cap = load_backend("captioner", tiny_blip2_t5, demo_store, device="cpu", max_new_tokens=8)
    images = demo_images(demo_store, 2)
    outs = cap.caption(images, [0, 0])
    enc = cap.processor(images=[decode_image(images[0])], text=[""], return_tensors="pt")
    with torch.inference_mode():
        direct = cap.model.generate(**enc, max_new_tokens=8, do_sample=False)
    # T5's output is [decoder start, new tokens...]: the caption is all of the new tokens, not a prompt-length cut
    assert outs[0].text == cap.tokenizer.decode(direct[0, 1:], skip_special_tokens=True).strip() != ""
    assert all(o.ok and 0 < o.tokens_out <= 8 for o in outs)


def _spy_device_time(monkeypatch, module, put_name: str) -> list[bool]:  # type: ignore[no-untyped-def]
    """Record, for each cache write of ``module``, whether it ran inside the device-time measurement."""
    from contextlib import contextmanager

    from capstore.backends import devices

    inside, writes = [False], []
    real_timed, real_put = devices.timed, getattr(module, put_name)

    @contextmanager
    def spy_timed(device):  # type: ignore[no-untyped-def]
        inside[0] = True
        with real_timed(device) as t:
            yield t
        inside[0] = False

    def spy_put(*args, **kwargs):  # type: ignore[no-untyped-def]
        writes.append(inside[0])
        return real_put(*args, **kwargs)

    monkeypatch.setattr(devices, "timed", spy_timed)  # what every backend's timed_batches measures with
    monkeypatch.setattr(module, put_name, spy_put)
    return writes


def test_scorer_device_seconds_leave_out_the_store_writes(demo_store, tiny_models, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from capstore.backends.scorers import open_clip as scorer_module

    writes = _spy_device_time(monkeypatch, scorer_module, "put_embeddings")
    scorer = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu", batch_size=2)
    scorer.encode_texts(["a red circle", "two blue squares", "a yellow triangle"])
    assert writes == [False, False]  # two batches written, neither inside the device-time measurement
    event = _usage(demo_store)[-1]
    assert event.calls == 2 and event.device_seconds > 0 and event.wall_seconds >= event.device_seconds


def test_generator_and_captioner_device_seconds_leave_out_the_cache_writes(demo_store, tiny_models,  # type: ignore[no-untyped-def]
                                                                           monkeypatch) -> None:
    from capstore.backends.captioners import hf_vision
    from capstore.backends.generators import hf

    gen_writes = _spy_device_time(monkeypatch, hf, "put_generations")
    generator = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu", batch_size=2,
                             max_new_tokens=4)
    generator.generate(["one", "two", "three"], [1, 2, 3])
    assert gen_writes == [False, False]
    event = _usage(demo_store)[-1]
    assert event.calls == 2 and event.device_seconds > 0 and event.wall_seconds >= event.device_seconds

    cap_writes = _spy_device_time(monkeypatch, hf_vision, "put_generations")
    captioner = load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu", batch_size=2,
                             max_new_tokens=4)
    captioner.caption(demo_images(demo_store, 3), [1, 2, 3])
    assert cap_writes == [False, False]
    event = _usage(demo_store)[-1]
    assert event.calls == 2 and event.device_seconds > 0 and event.wall_seconds >= event.device_seconds


def test_embedding_cache_lookup_on_each_database(store) -> None:  # type: ignore[no-untyped-def]
    from capstore.backends.caching import get_embeddings, put_embeddings
    from capstore.backends.models import register_model
    from capstore.store.content import sha256_text

    model_id, _ = register_model(store, kind="scorer", backend="test", name="m", weights="m", settings={})
    a, b, c, missing = (sha256_text(t) for t in ("a", "b", "c", "never stored"))
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    put_embeddings(store, model_id, "text", [a, b, c], vectors)
    found = get_embeddings(store, model_id, "text", [c, missing, a, c])  # PostgreSQL: one array parameter
    assert sorted(found) == sorted([a, c]) and np.array_equal(found[c], vectors[2])
    assert get_embeddings(store, model_id, "image", [a]) == {}
