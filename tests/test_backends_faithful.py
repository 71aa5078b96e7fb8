"""Faithful numbers: the seeded sampler, end tokens, answers cut by the token limit, decoding presets."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from capstore.backends.base import CallContext, Generation
from capstore.backends.registry import load_backend
from capstore.backends.sampling import (count_new_tokens, cut_answer, drop_unfinished_line, end_token_ids,
                                        hit_token_limit, make_sampler, new_tokens, sampler_params)
from capstore.errors import InputError
from capstore.store.schema import GenerationCache
from tests.conftest import demo_images


# -- the seeded sampler ------------------------------------------------------------------------------

def _original_sampler(seeds, temperature, top_p):  # type: ignore[no-untyped-def]
    """The sampler as it was before device generators (copied verbatim): the CPU path must equal it."""
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(int(s) % (2**63)) for s in seeds]

    def call(scores):  # type: ignore[no-untyped-def]
        logits = scores.float() / max(temperature, 1e-6)
        if top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop_sorted = cum - sorted_logits.softmax(-1) > top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        noise = torch.stack([
            torch.rand(logits.shape[-1], generator=g).clamp_(1e-10, 1 - 1e-10) for g in generators
        ]).to(logits.device)
        return logits - torch.log(-torch.log(noise))

    return call


@pytest.mark.parametrize("temperature, top_p", [(0.5, 0.9), (1.0, 1.0), (0.7, 0.3)])
def test_cpu_sampler_is_the_original_bit_for_bit(temperature: float, top_p: float) -> None:
    import torch

    seeds = [3, 2**40 + 7, 11]
    new, old = make_sampler(seeds, temperature, top_p, "cpu"), _original_sampler(seeds, temperature, top_p)
    torch.manual_seed(0)
    for _ in range(4):  # successive steps draw successive numbers from each row's generator
        scores = torch.randn(3, 1000)
        assert torch.equal(new(None, scores), old(scores))


def test_device_generators_draw_per_row() -> None:
    """The device path (run here on CPU tensors): a row's draws depend on its seed only, not its neighbours."""
    import torch

    scores = torch.randn(3, 500)
    batch = make_sampler([5, 6, 7], 0.5, 0.9, "cuda", on_device=True)
    alone = make_sampler([6], 0.5, 0.9, "cuda", on_device=True)
    first, second = batch(None, scores), batch(None, scores)
    assert torch.equal(first[1], alone(None, scores[1:2])[0])
    assert not torch.equal(first, second)  # each step draws new noise
    assert torch.equal(second[1], alone(None, scores[1:2])[0])


def test_samples_drawn_on_a_gpu_have_their_own_cache_keys() -> None:
    assert sampler_params("cpu", sampling=True) == {}
    assert sampler_params("cuda:1", sampling=False) == {}
    assert sampler_params("cuda", sampling=True) == {"sampler": "device-philox-1"}


# -- end tokens and the token limit -----------------------------------------------------------------

def test_token_counts_stop_at_any_end_token() -> None:
    import torch

    eos = end_token_ids([128001, 128008, 128009], 128009)  # Llama-3.1's generation_config + tokenizer
    assert eos == {128001, 128008, 128009}
    rows = torch.tensor([[1, 2, 5, 6, 128008, 0, 0],      # ends at eom: 3 tokens + the end token
                         [1, 2, 5, 128001, 9, 9, 9],      # ends at end_of_text
                         [1, 2, 5, 6, 7, 8, 9]])          # never ends: cut at the limit of 5
    assert new_tokens(rows, 2, eos, pad_id=0) == [(3, True), (2, True), (5, False)]
    assert count_new_tokens(rows, 2, eos, 0) == [3, 2, 5]
    assert count_new_tokens(rows, 2, 128009, 0) == [3, 5, 5]  # the tokenizer's eos alone miscounts
    assert [hit_token_limit(n, ended, 5) for n, ended in new_tokens(rows, 2, eos, 0)] == [False, False, True]


def test_a_cut_answer_loses_its_unfinished_line_and_keeps_its_raw_output() -> None:
    answer = "1. a red circle\n2. a blue square\n3. a yellow tri"
    assert drop_unfinished_line(answer) == "1. a red circle\n2. a blue square"
    assert drop_unfinished_line("1. cut in the first line") == ""
    cut = cut_answer(answer, True, tokens_out=12)
    assert (cut.text, cut.output, cut.truncated, cut.tokens_out) == (drop_unfinished_line(answer), answer, True, 12)
    whole = cut_answer(answer, False)
    assert (whole.text, whole.output, whole.truncated) == (answer, answer, False)


def test_hf_generator_stops_at_an_end_token_of_its_generation_config(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    gen = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu", max_new_tokens=10)
    prompts, seeds = ["describe a red circle"], [4]
    raw = gen._generate(prompts, seeds)[0]
    assert raw.truncated and raw.tokens_out == 10  # random weights never end by themselves
    # Make a token the model samples (not the tokenizer's eos) one more end token, as Llama-3.1's eot/eom are.
    enc = gen.tokenizer.apply_chat_template([{"role": "user", "content": prompts[0]}], tokenize=False,
                                            add_generation_prompt=True)
    import torch
    from transformers import LogitsProcessorList

    ids = gen.tokenizer([enc], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = gen.model.generate(**ids, do_sample=False, max_new_tokens=10, pad_token_id=gen.tokenizer.pad_token_id,
                                 logits_processor=LogitsProcessorList([make_sampler(seeds, 0.5, 0.9, "cpu")]))
    sampled = out[0, ids["input_ids"].shape[1]:].tolist()
    stop = next(t for t in sampled[2:] if t != gen.tokenizer.eos_token_id)
    gen.model.generation_config.eos_token_id = [gen.tokenizer.eos_token_id, stop]
    ended = gen._generate(prompts, seeds)[0]
    assert ended.tokens_out == sampled.index(stop) + 1 and not ended.truncated and ended.raw is None


def test_hf_generator_marks_cut_answers_and_the_cache_replays_them(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    gen = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu", max_new_tokens=12)
    outs = gen.generate(["describe a red circle", "describe two squares"], [1, 2], CallContext())
    assert all(o.truncated and o.tokens_out == 12 and o.text == drop_unfinished_line(o.output) for o in outs)
    with demo_store.read() as s:
        rows = s.scalars(select(GenerationCache)).all()
    assert {r.params["truncated"] for r in rows} == {"dropped-last-line"}  # counted in the store
    assert {r.raw_output for r in rows} == {o.output for o in outs}
    again = gen.generate(["describe a red circle", "describe two squares"], [1, 2])
    assert [(o.cached, o.text, o.output, o.truncated) for o in again] == [(True, o.text, o.output, True) for o in outs]


def test_generations_not_cut_are_stored_unmarked(demo_store) -> None:  # type: ignore[no-untyped-def]
    from capstore.backends.caching import get_generations, put_generations
    from capstore.backends.models import register_model

    model_id, _ = register_model(demo_store, kind="generator", backend="fake", name="m", weights="fake:m", settings={})
    put_generations(demo_store, model_id, [("k1", {"seed": 1}, Generation(text="1. whole")),
                                           ("k2", {"seed": 2}, Generation(text="a caption cut", truncated=True))])
    found = get_generations(demo_store, ["k1", "k2"])
    assert (found["k1"].truncated, found["k2"].truncated, found["k2"].text) == (False, True, "a caption cut")
    with demo_store.read() as s:
        params = dict(s.execute(select(GenerationCache.key, GenerationCache.params)).all())
    assert "truncated" not in params["k1"] and params["k2"]["truncated"] == "kept"


# -- decoding presets of the captioners ---------------------------------------------------------------

def _spy_generate(captioner) -> list[dict]:  # type: ignore[no-untyped-def]
    calls: list[dict] = []
    real = captioner.model.generate

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        calls.append({k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "pixel_values")})
        return real(**kwargs)

    captioner.model.generate = spy
    return calls


def test_decoding_presets_reach_generate_and_the_cache_key(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    images = demo_images(demo_store, 2)
    greedy = load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu")
    lavis = load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu", decoding="lavis-coco")
    assert greedy.params["decoding"] == "greedy" and lavis.params["decoding"] == "lavis-coco"
    assert greedy.params["max_new_tokens"] == lavis.params["max_new_tokens"] == 30
    g_calls, l_calls = _spy_generate(greedy), _spy_generate(lavis)
    g_out, l_out = greedy.caption(images, [0, 1]), lavis.caption(images, [0, 1])
    assert g_calls[0]["num_beams"] == 1 and "min_new_tokens" not in g_calls[0] and not g_calls[0]["do_sample"]
    # LAVIS's COCO evaluation: 5 beams, <= 30 new tokens, min_len 8 (new tokens, for a decoder-only LM such as OPT)
    assert (l_calls[0]["num_beams"], l_calls[0]["max_new_tokens"], l_calls[0]["min_new_tokens"]) == (5, 30, 8)
    assert all(o.ok and o.tokens_out >= 8 for o in l_out)
    assert not any(o.cached for o in l_out)  # a greedy caption is never served for a beam-search request
    with demo_store.read() as s:
        decodings = {r.params["params"]["decoding"] for r in s.scalars(select(GenerationCache))}
    assert decodings == {"greedy", "lavis-coco"} and len(g_out) == 2


def test_lavis_coco_on_an_encoder_decoder_counts_min_length_as_lavis_did() -> None:
    from capstore.backends.captioners.decoding import DECODINGS, generate_kwargs

    t5 = generate_kwargs(DECODINGS["lavis-coco"], 30, encoder_decoder=True)
    assert (t5["num_beams"], t5["max_new_tokens"], t5["min_length"]) == (5, 30, 8) and "min_new_tokens" not in t5


def test_several_candidates_sample_and_other_presets_are_refused(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    sampled = load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu", num_candidates=2)
    assert sampled.params["decoding"] == "sample" and sampled.params["do_sample"]
    with pytest.raises(InputError, match="--num-candidates 3 needs --decoding sample"):
        load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu", num_candidates=3,
                     decoding="lavis-coco")
    with pytest.raises(InputError, match="--decoding 'beam9': expected one of greedy, lavis-coco, sample"):
        load_backend("captioner", tiny_models.specs["llava"], demo_store, device="cpu", decoding="beam9")


def test_the_decoding_is_in_the_run_config_and_its_hash() -> None:
    from capstore.runs.config import RunConfig

    plain = RunConfig(method="blip2", dataset="demo")
    lavis = RunConfig(method="blip2", dataset="demo", decoding="lavis-coco")
    assert lavis.to_json()["decoding"] == "lavis-coco" and lavis.backend_options("captioner")["decoding"] == "lavis-coco"
    assert lavis.hash() != plain.hash()
    assert "decoding" not in plain.result_fields()  # runs made before the field keep their hash
    assert "decoding" not in plain.backend_options("captioner") and "decoding" not in lavis.backend_options("scorer")
