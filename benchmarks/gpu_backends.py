"""The first thing to run when a GPU is lent: capstore's real-model paths, checked and timed in minutes.

Usage::

    python benchmarks/gpu_backends.py --json gpu.json          # a CUDA machine; nothing is downloaded
    python benchmarks/gpu_backends.py --small --json smoke.json # the same code path on CPU, tiny configs

Without CUDA (and without ``--small``) it refuses in one line. It exits 1 when any section fails or
any check does not hold (each failure is printed as one ``FAILED`` line and kept in the JSON), 0
otherwise. Every number comes from capstore's own backend classes, their usage events (device-seconds
are CUDA-event time around each backend's own work) and ``torch.cuda.max_memory_allocated``.

The models are the real architectures at their real shapes with random weights (``from_pretrained``
of the transformers classes is swapped for ``from_config`` on the device: no 16 GB to write and read),
each backend at its **runtime default** (dtype, decoding, sampling, ``max_new_tokens``):

- ``scorer``: open_clip ``ViT-SO400M-14-SigLIP`` (MILS's) in float32. SigLIP's tokenizer is a hub
  file no library ships, so its text tower reads open_clip's own CLIP BPE (vocab 49,408 instead of
  32,000; registered under a name without "siglip", which would fetch the hub tokenizer).
- ``generator``: ``Meta-Llama-3.1-8B-Instruct``'s config in bfloat16 with Llama-3's real tokenizer
  when the ``llama-models`` package is installed (its ``llama3/tokenizer.model``, converted with
  transformers' ``TikTokenConverter``), else a byte-level BPE trained on the pool; Llama-3.1's chat
  template (its default system header) and its three end tokens in ``generation_config``. Random
  weights never end an answer, so every answer runs to the limit (and is marked truncated).
- ``mils``: one MILS iteration of 16 images through the engine (``create_run`` + ``work``): the
  pool encoded once, the images, 16 prompts answered at the runtime default of 3,000 new tokens;
  device-seconds per image per stage, wall time, peak memory. A random-weight LLM writes no
  parseable candidate, so candidate scoring is timed in the scorer section (800 MILS-like lines).
- ``blip2``: ``blip2-flan-t5-xl`` (ViT-g + Q-Former + Flan-T5-XL) in float16, ``--decoding greedy``
  (the default) and ``lavis-coco`` (5 beams); ``llava``: ``llava-1.5-7b-hf`` (CLIP ViT-L/336 +
  Llama-2-7B) in float16. Their tokenizers (T5's, Llama-2's) ship with no library: a small
  byte-level BPE stands in (captions are 30 tokens at most either way).
- ``vllm``: if vLLM is importable here, the ``vllm:`` generator on the same Llama config with
  ``load_format="dummy"`` (random weights), MILS's defaults; with ``--vllm-url`` the ``openai:``
  generator against a running ``vllm serve`` instead. Otherwise recorded as skipped.
- ``projection``: COCO's 5,000 test images with MILS's settings (28.7K pool once, 10 iterations x
  50 candidates) from the measured per-image device-seconds, against the study's 116 GPU-hours.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import random
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

SCORER_NAME = "capstore-so400m-arch"  # no "siglip" in the name: open_clip would fetch a hub tokenizer
COCO_IMAGES = 5_000
STUDY = {"mils_gpu_hours": 116.0, "mils_usd": 291.66, "blip2_minutes": 31.0, "blip2_usd": 0.65}
MILS = {"iterations": 10, "candidates": 50, "pool_lines": 28_767, "realistic_answer_tokens": 750}  # 50 lines x ~15 tokens
# Llama-3.1's special tokens (llama_models/llama3/tokenizer.py), ids 128000-128255.
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                  "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"]
LLAMA3_SPECIAL += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(LLAMA3_SPECIAL))]
LLAMA3_END_TOKENS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")  # generation_config.eos_token_id
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama-3.1-Instruct's chat template without tools: its default system header, then the turns.
LLAMA31_TEMPLATE = (
    "{{- bos_token }}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n<|eot_id|>' }}"
    "{% for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim"
    " + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
LLAVA_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
                  "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
                  "{% endfor %}{% if m['role'] != 'user' %}</s>{% else %} {% endif %}{% endfor %}"
                  "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


class CheckFailed(Exception):
    """A check of a section did not hold."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# -- architectures ------------------------------------------------------------------------------

def scorer_config(small: bool) -> dict[str, Any]:
    import open_clip

    if small:
        from importlib import resources

        return json.loads(resources.files("capstore.backends").joinpath("configs/capstore-tiny-clip.json").read_text())["model_cfg"]
    cfg = open_clip.get_model_config("ViT-SO400M-14-SigLIP")
    check(cfg is not None, "open_clip has no ViT-SO400M-14-SigLIP config")
    text = {k: v for k, v in cfg["text_cfg"].items() if k not in ("hf_tokenizer_name", "tokenizer_kwargs")}
    text["vocab_size"] = 49_408  # the CLIP BPE's ids
    return {**cfg, "text_cfg": text}


def llama3_tokenizer(folder: Path):  # -> (PreTrainedTokenizerFast, str) or None
    """Llama-3's own tokenizer from the ``llama-models`` package's ``tokenizer.model``, if installed."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "llama3" / "tokenizer.model"
    if not path.is_file():
        return None
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = {base64.b64decode(token): int(rank)
             for token, rank in (line.split() for line in path.read_text().splitlines() if line.strip())}

    class Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(_url: str) -> dict[bytes, int]:
            return ranks

    tok = Converter(str(path), pattern=LLAMA3_PATTERN, extra_special_tokens=LLAMA3_SPECIAL).converted()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|finetune_right_pad_id|>")
    check(len(fast) == 128_256 and fast.convert_tokens_to_ids("<|eot_id|>") == 128_009,
          f"llama_models' tokenizer has {len(fast)} tokens, not Llama-3.1's 128,256")
    return fast, "Llama-3's own (llama3/tokenizer.model of the llama-models package)"


def trained_tokenizer(corpus: list[str], vocab: int):  # -> (PreTrainedTokenizerFast, str)
    """A byte-level BPE trained on the pool, with Llama-3.1's special tokens (stand-in for its tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus + [f"{random.random():.3f}: " for _ in range(200)],
                            trainers.BpeTrainer(vocab_size=vocab, special_tokens=LLAMA3_SPECIAL[:12],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|finetune_right_pad_id|>")
    return fast, f"byte-level BPE ({vocab:,}) trained on the pool (llama-models not installed)"


def build_llama(folder: Path, corpus: list[str], small: bool):  # -> str (tokenizer description)
    """Config, generation config and tokenizer of Llama-3.1-8B-Instruct (tiny dimensions with ``small``)."""
    from transformers import GenerationConfig, LlamaConfig

    found = None if small else llama3_tokenizer(folder)
    tok, source = found or (trained_tokenizer(corpus[:2_000], 2_000) if small else trained_tokenizer(corpus, 32_000))
    tok.chat_template = LLAMA31_TEMPLATE
    tok.save_pretrained(folder)
    ends = [tok.convert_tokens_to_ids(t) for t in LLAMA3_END_TOKENS]
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=ends, pad_token_id=tok.pad_token_id)
    if small:
        dims = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                    num_key_value_heads=1, head_dim=64, vocab_size=len(tok))
    else:  # meta-llama/Meta-Llama-3.1-8B-Instruct config.json
        dims = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=128_256, rope_theta=500_000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    LlamaConfig(**dims, max_position_embeddings=131_072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                torch_dtype="bfloat16", **ids).save_pretrained(folder)
    GenerationConfig(**ids, do_sample=True, temperature=0.6, top_p=0.9).save_pretrained(folder)  # as shipped
    return source


def caption_tokenizer(folder: Path, vocab: int):  # -> PreTrainedTokenizerFast
    """A byte-level BPE with ``<image>``, standing in for T5's / Llama-2's tokenizers (no library ships them)."""
    from capstore.backends.tiny import build_tokenizer

    tok = build_tokenizer(folder)
    check(len(tok) <= vocab, f"stand-in tokenizer larger than the model's vocabulary {vocab}")
    return tok


def build_blip2(folder: Path, small: bool) -> None:
    """Salesforce/blip2-flan-t5-xl: ViT-g/14 (39 layers) + 12-layer Q-Former + Flan-T5-XL (24+24 layers)."""
    from transformers import (Blip2Config, Blip2Processor, Blip2QFormerConfig, Blip2VisionConfig, BlipImageProcessor,
                              T5Config)

    tok = caption_tokenizer(folder, 32_128)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
               decoder_start_token_id=tok.pad_token_id)
    if small:
        vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=224, patch_size=14)
        qformer = Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     encoder_hidden_size=32)
        text = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1,
                        num_decoder_layers=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False, **ids)
    else:
        vision = Blip2VisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                                   num_attention_heads=16, image_size=224, patch_size=14)
        qformer = Blip2QFormerConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, encoder_hidden_size=1408)
        text = T5Config(vocab_size=32_128, d_model=2048, d_ff=5120, d_kv=64, num_heads=32, num_layers=24,
                        num_decoder_layers=24, feed_forward_proj="gated-gelu", tie_word_embeddings=False, **ids)
    Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                num_query_tokens=32, image_token_index=tok.convert_tokens_to_ids("<image>")).save_pretrained(folder)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}), tokenizer=tok,
                   num_query_tokens=32).save_pretrained(folder)


def build_llava(folder: Path, small: bool) -> None:
    """llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px (layer -2, 576 image tokens) + Llama-2-7B."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

    tok = caption_tokenizer(folder, 32_064)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    size = 32 if small else 336
    patch = 16 if small else 14
    if small:
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=size, patch_size=patch, projection_dim=32)
        text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                           num_attention_heads=1, num_key_value_heads=1, head_dim=64, **ids)
    else:
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                  image_size=size, patch_size=patch, projection_dim=768)
        text = LlamaConfig(vocab_size=32_064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                           rms_norm_eps=1e-5, **ids)
    LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                vision_feature_select_strategy="default", projector_hidden_act="gelu").save_pretrained(folder)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": size},
                                                      crop_size={"height": size, "width": size}),
                   tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE).save_pretrained(folder)


@contextmanager
def random_weights(device: str) -> Iterator[None]:
    """``from_pretrained`` of the LLM and captioner classes builds from ``config.json`` on ``device``."""
    import torch
    import transformers

    classes = [transformers.AutoModelForCausalLM, transformers.Blip2ForConditionalGeneration,
               transformers.LlavaForConditionalGeneration]
    saved = [c.__dict__.get("from_pretrained") for c in classes]

    def make(cls):  # type: ignore[no-untyped-def]
        def from_pretrained(_cls, path, dtype=None, **_kw):  # type: ignore[no-untyped-def]
            config = transformers.AutoConfig.from_pretrained(path)
            with torch.device(device):
                if cls is transformers.AutoModelForCausalLM:
                    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
                else:
                    model = cls._from_config(config, dtype=dtype)
            path = Path(path)
            if (path / "generation_config.json").is_file():  # as from_pretrained reads it
                model.generation_config = transformers.GenerationConfig.from_pretrained(path)
            return model
        return classmethod(from_pretrained)

    try:
        for c in classes:
            c.from_pretrained = make(c)
        yield
    finally:
        for c, orig in zip(classes, saved):
            if orig is None:
                del c.from_pretrained
            else:
                c.from_pretrained = orig


# -- the run of sections --------------------------------------------------------------------------

class Report:
    """Results by section, failures as one line each, peak memory and time per section; saved as it goes."""

    def __init__(self, path: str | None, cuda: bool) -> None:
        self.path, self.cuda = path, cuda
        self.data: dict[str, Any] = {"sections": {}, "failures": []}

    def section(self, name: str, fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        import torch

        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        print(f"-- {name}", flush=True)
        try:
            out = fn() or {}
        except Exception as exc:  # one failing section must not hide the others
            line = f"{name}: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:400]}"
            self.data["failures"].append(line)
            print(f"FAILED {line}", flush=True)
            if not isinstance(exc, CheckFailed):
                traceback.print_exc()
            out = None
        result = dict(out or {}, section_s=round(time.perf_counter() - start, 2))
        if self.cuda:
            result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.data["sections"][name] = result
        print(json.dumps(result, indent=1, default=str), flush=True)
        bc.write_json(self.path, self.data)
        return out


def _ref(data: bytes):  # type: ignore[no-untyped-def]
    from capstore.backends.base import ImageRef
    from capstore.store.content import sha256_bytes

    return ImageRef(sha256_bytes(data), data)


def _events(store, since: int) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    return bc.usage_by_stage(store, since_id=since)


def _check_timing(stages: dict[str, dict[str, float]], where: str) -> None:
    for stage, ev in stages.items():
        check(ev["device_seconds"] <= ev["wall_seconds"] * 1.05 + 1e-3,
              f"{where}: {stage} device-seconds {ev['device_seconds']:.3f} exceed wall {ev['wall_seconds']:.3f}")


def section_scorer(ctx: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import open_clip

    from capstore.backends.registry import load_backend

    args, store = ctx["args"], ctx["store"]
    cfg_path = Path(args.work) / f"{SCORER_NAME}.json"
    cfg_path.write_text(json.dumps(scorer_config(args.small)))
    open_clip.add_model_config(cfg_path)
    t0 = time.perf_counter()
    scorer = load_backend("scorer", f"open_clip:{SCORER_NAME}", store, device=args.device).load()  # runtime default
    ctx["scorer"] = scorer
    params = next(scorer.model.parameters())
    out = {"arch": "ViT-SO400M-14-SigLIP (CLIP BPE tokenizer, text vocab 49,408)", "dtype": scorer.dtype_name,
           "param_dtype": str(params.dtype), "load_s": round(time.perf_counter() - t0, 2),
           "params_m": round(sum(p.numel() for p in scorer.model.parameters()) / 1e6, 1)}
    if args.device.startswith("cuda"):
        check(scorer.dtype_name == "float32" and str(params.dtype) == "torch.float32",
              f"scorer runs in {scorer.dtype_name}/{params.dtype}, not MILS's float32")
    since = bc.last_usage_id(store)
    texts = scorer.encode_texts([f"a photo of thing number {i}" for i in range(64)])
    images = scorer.encode_images([_ref(b) for b in bc.drawn_images(8, seed=7)])
    check(np.isfinite(texts).all() and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-3), "text embeddings")
    check(np.isfinite(images).all() and texts.shape[1] == images.shape[1], "image embeddings")
    _check_timing(_events(store, since), "scorer")
    out["embedding_dim"] = int(texts.shape[1])
    # Candidate scoring: the 50 new candidates of each image of an iteration, as MILS's lines look. (The MILS
    # run below cannot measure it: a random-weight LLM writes no parseable candidate.)
    rng = random.Random(5)
    candidates = [f"{rng.choice(ctx['pool'])} ({i})" for i in range(args.e2e_images * MILS["candidates"])]
    since = bc.last_usage_id(store)
    scorer.encode_texts(candidates)
    ev = _events(store, since)["encode_text"]
    out["candidates"] = {"texts": int(ev["items"]), "device_s": round(ev["device_seconds"], 3),
                         "s_per_text": ev["device_seconds"] / ev["items"]}
    ctx["s_per_candidate"] = ev["device_seconds"] / ev["items"]
    return out


def section_generator(ctx: dict[str, Any]) -> dict[str, Any]:
    from capstore.backends.registry import load_backend
    from capstore.backends.sampling import drop_unfinished_line, model_end_tokens

    args, store = ctx["args"], ctx["store"]
    folder = Path(args.work) / "llama-3.1-8b-instruct-arch"
    source = build_llama(folder, ctx["pool"] + [ctx["template"]], args.small)
    t0 = time.perf_counter()
    with random_weights(args.device):
        gen = load_backend("generator", f"hf:{folder}", store, device=args.device, batch_size=16).load()
    ctx["generator"], ctx["generator_folder"] = gen, folder
    out: dict[str, Any] = {"arch": "Meta-Llama-3.1-8B-Instruct config", "tokenizer": source, "dtype": gen.dtype_name,
                           "params": dict(gen.params), "load_s": round(time.perf_counter() - t0, 2),
                           "params_m": round(sum(p.numel() for p in gen.model.parameters()) / 1e6, 1)}
    ends = model_end_tokens(gen.model, gen.tokenizer)
    check(len(ends) == 3, f"end tokens {sorted(ends)}: Llama-3.1's generation_config names three")
    check(gen.params["max_new_tokens"] == 3000 and gen.params["temperature"] == 0.5, "generator defaults are not MILS's")
    if args.device.startswith("cuda"):
        from capstore.backends.cuda_probe import cuda_devices

        bf16 = cuda_devices()[0].supports_bfloat16
        check(gen.dtype_name == ("bfloat16" if bf16 else "float16"), f"generator runs in {gen.dtype_name}")
        check(gen.params.get("sampler") == "device-philox-1", "the sampler does not draw on the device")
    prompts = mils_prompts(ctx["template"], ctx["pool"], 16, seed=16)
    defaults = dict(gen.params)
    gen.params["max_new_tokens"] = 8  # warm-up: kernels, allocator
    gen.generate(prompts[:2], [1, 2])
    limit = args.answer_tokens
    gen.params["max_new_tokens"] = limit  # a realistic answer length (random weights never stop earlier)
    since = bc.last_usage_id(store)
    answers = gen.generate(prompts, list(range(100, 116)))
    ev = _events(store, since)
    _check_timing(ev, "generator")
    g = ev["generate"]
    check(all(a.ok and a.tokens_out <= limit for a in answers), "failed answers or token counts beyond the limit")
    check(all(a.tokens_out == limit and a.text == drop_unfinished_line(a.output) for a in answers if a.truncated),
          "an answer marked truncated is not at the limit or kept its unfinished line")
    check(not any(a.truncated for a in answers if a.tokens_out < limit), "an answer below the limit is marked truncated")
    gen.params.clear()
    gen.params.update(defaults)
    out["batch16"] = {"max_new_tokens": limit, "answers_cut_by_the_limit": sum(a.truncated for a in answers),
                      "device_s": round(g["device_seconds"], 3), "tokens_in_per_prompt": round(g["tokens_in"] / 16, 1),
                      "tokens_out_per_s": round(g["tokens_out"] / g["device_seconds"], 1),
                      "s_per_prompt": round(g["device_seconds"] / 16, 4)}
    ctx["s_per_prompt_realistic"] = g["device_seconds"] / 16
    return out


def mils_prompts(template: str, pool: list[str], n: int, seed: int) -> list[str]:
    from capstore.methods.mils import format_prompt

    rng = random.Random(seed)
    k = min(50, len(pool))
    return [format_prompt(template, [(t, rng.uniform(0.05, 0.2)) for t in rng.sample(pool, k)], 50) for _ in range(n)]


def section_mils(ctx: dict[str, Any]) -> dict[str, Any]:
    from capstore.runs.config import RunConfig
    from capstore.runs.create import create_run
    from capstore.runs.engine import Backends, work

    args, store = ctx["args"], ctx["store"]
    check("scorer" in ctx and "generator" in ctx, "needs the scorer and generator sections")
    images = ctx["photos"][: args.e2e_images]
    bc.add_image_dataset(store, "gpu-e2e", images)
    gen = ctx["generator"]
    if args.max_new_tokens:
        gen.params["max_new_tokens"] = args.max_new_tokens
    cfg = RunConfig(method="mils", dataset="gpu-e2e", scorer=f"open_clip:{SCORER_NAME}",
                    generator=f"hf:{ctx['generator_folder']}", iterations=1, keep=50, requested=50,
                    pool_size=args.pool_size, batch_images=len(images), device=args.device,
                    generator_params={k: gen.params[k] for k in ("temperature", "top_p", "max_new_tokens")})
    run_id = create_run(store, cfg, pool_file=str(ctx["pool_file"]), prompt_file=str(ctx["prompt_file"]))
    backends = Backends(store, cfg)
    backends.__dict__["_scorer"], backends.__dict__["_generator"] = ctx["scorer"], gen  # built above
    cut_before = _cut_answers(store)
    with bc.stopwatch() as t:
        summary = work(store, run_id, backends=backends, progress=False)
    stages = bc.usage_by_stage(store, run_id)
    check(summary.status == "done" and summary.items_done == len(images),
          f"MILS run ended {summary.status}, {summary.items_done}/{len(images)} items")
    for stage in ("encode_pool", "encode_image", "generate"):  # (no parseable candidate to score: random weights)
        check(stage in stages and stages[stage]["device_seconds"] > 0, f"no device time for stage {stage}")
    _check_timing(stages, "mils")
    cut = _cut_answers(store) - cut_before
    n = len(images)
    per_image = {stage: round(ev["device_seconds"] / n, 4) for stage, ev in stages.items()}
    ctx["mils_stages"], ctx["mils_images"] = stages, n
    return {"images": n, "iterations": 1, "pool_lines": int(stages["encode_pool"]["items"]),
            "max_new_tokens": cfg.generator_params["max_new_tokens"], "status": summary.status,
            "wall_s": round(t["s"], 2), "device_s_per_image": per_image, "answers_cut_by_the_limit": cut,
            "tokens_out_per_answer": round(stages["generate"]["tokens_out"] / max(1, stages["generate"]["items"]), 1)}


def _cut_answers(store) -> int:  # type: ignore[no-untyped-def]
    """Generations in the cache cut by the token limit (their unfinished last line dropped)."""
    from sqlalchemy import func, select

    from capstore.store.schema import GenerationCache

    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(GenerationCache).where(
            GenerationCache.params["truncated"].as_string() == "dropped-last-line")) or 0)


def section_captioner(ctx: dict[str, Any], name: str) -> dict[str, Any]:
    from capstore.backends.registry import load_backend

    args, store = ctx["args"], ctx["store"]
    folder = Path(args.work) / f"{name}-arch"
    (build_blip2 if name == "blip2" else build_llava)(folder, args.small)
    images = [_ref(b) for b in ctx["photos"][: args.e2e_images]]
    decodings = ["greedy", "lavis-coco"] if name == "blip2" else ["greedy"]
    out: dict[str, Any] = {"arch": {"blip2": "Salesforce/blip2-flan-t5-xl", "llava": "llava-hf/llava-1.5-7b-hf"}[name]}
    for decoding in decodings:
        with random_weights(args.device):
            options = {} if decoding == "greedy" else {"decoding": decoding}  # greedy: the runtime default
            cap = load_backend("captioner", f"{name}:{folder}", store, device=args.device, **options).load()
        out.setdefault("dtype", cap.dtype_name)
        out["params_m"] = round(sum(p.numel() for p in cap.model.parameters()) / 1e6, 1)
        check(cap.params["decoding"] == decoding, f"{name}: decoding {cap.params['decoding']}, not {decoding}")
        if args.device.startswith("cuda"):
            check(cap.dtype_name == "float16", f"{name} runs in {cap.dtype_name}, not float16")
        cap.caption([_ref(b) for b in bc.drawn_images(2, seed=11)], [0, 1])  # warm-up (other images)
        since = bc.last_usage_id(store)
        caps = cap.caption(images, list(range(len(images))))
        ev = _events(store, since)
        _check_timing(ev, name)
        check(all(c.ok and c.tokens_out <= cap.params["max_new_tokens"] for c in caps), f"{name}: failed captions")
        e = ev["caption"]
        out[decoding] = {"images": int(e["images"]), "device_s": round(e["device_seconds"], 3),
                         "s_per_image": round(e["device_seconds"] / e["images"], 4),
                         "tokens_out_per_image": round(e["tokens_out"] / e["images"], 1)}
        del cap
        _free()
    ctx[f"{name}_s_per_image"] = out["greedy"]["s_per_image"]
    return out


def section_vllm(ctx: dict[str, Any]) -> dict[str, Any]:
    from capstore.backends.registry import load_backend

    args, store = ctx["args"], ctx["store"]
    prompts = mils_prompts(ctx["template"], ctx["pool"], 16, seed=32)
    if args.vllm_url:
        gen = load_backend("generator", f"openai:{args.vllm_model}", store, base_url=args.vllm_url, api_key="EMPTY",
                           max_new_tokens=args.answer_tokens)
        how = f"openai: against {args.vllm_url}"
    elif importlib.util.find_spec("vllm") is not None and args.device.startswith("cuda"):
        from capstore.backends.generators import vllm as backend

        plain = backend.VLLMGenerator.engine_args
        backend.VLLMGenerator.engine_args = lambda self: {**plain(self), "load_format": "dummy"}  # random weights
        gen = load_backend("generator", f"vllm:{ctx['generator_folder']}", store, device=args.device,
                           max_new_tokens=args.answer_tokens)
        how = "vllm: in process (load_format dummy)"
    else:
        return {"skipped": "vllm is not importable here and no --vllm-url was given"}
    t0 = time.perf_counter()
    gen.load() if hasattr(gen, "load") else None
    load_s = time.perf_counter() - t0
    since = bc.last_usage_id(store)
    answers = gen.generate(prompts, list(range(200, 216)))
    ev = _events(store, since)["generate"]
    check(all(a.ok for a in answers), f"vllm: {next((a.error for a in answers if not a.ok), '')}")
    return {"how": how, "load_s": round(load_s, 2), "s_per_prompt": round(ev["device_seconds"] / 16, 4),
            "tokens_out_per_answer": round(ev["tokens_out"] / 16, 1),
            "answers_cut_by_the_limit": sum(a.truncated for a in answers)}


def projection(ctx: dict[str, Any]) -> dict[str, Any]:
    """Device-hours for COCO's 5,000 images, MILS's settings, from the 16-image iteration's per-image costs."""
    stages, n = ctx["mils_stages"], ctx["mils_images"]
    per = {stage: ev["device_seconds"] / n for stage, ev in stages.items()}
    it = MILS["iterations"]
    pool = stages["encode_pool"]
    parts = {"pool once": pool["device_seconds"] / pool["items"] * MILS["pool_lines"],  # (scaled if subsampled)
             "images": COCO_IMAGES * per["encode_image"],
             "generation (3,000-token answers, as measured)": COCO_IMAGES * it * per["generate"],
             "candidate scoring": COCO_IMAGES * it * MILS["candidates"] * ctx["s_per_candidate"]}
    hours = {k: round(v / 3600, 2) for k, v in parts.items()}
    total = sum(parts.values()) / 3600
    out: dict[str, Any] = {"assumptions": f"{COCO_IMAGES} images, {it} iterations x {MILS['candidates']} candidates, "
                                          f"generator batch 16, the {MILS['pool_lines']:,}-line pool encoded once",
                           "mils_parts_gpu_hours": hours, "mils_gpu_hours_upper": round(total, 2),
                           "study": STUDY}
    if "s_per_prompt_realistic" in ctx:
        realistic = total - parts["generation (3,000-token answers, as measured)"] / 3600 \
            + COCO_IMAGES * it * ctx["s_per_prompt_realistic"] / 3600
        out["mils_gpu_hours_750_token_answers"] = round(realistic, 2)
        out["vs_study"] = round(realistic / STUDY["mils_gpu_hours"], 3)
    if "blip2_s_per_image" in ctx:
        out["blip2_minutes"] = round(COCO_IMAGES * ctx["blip2_s_per_image"] / 60, 2)
    if "llava_s_per_image" in ctx:
        out["llava_minutes"] = round(COCO_IMAGES * ctx["llava_s_per_image"] / 60, 2)
    return out


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- main -----------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny configs on CPU: a smoke test of this script")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --small)")
    p.add_argument("--pool", type=Path, default=None, help="MILS pool (default: shared, else the demo's)")
    p.add_argument("--prompt", type=Path, default=None, help="MILS prompt (default: shared, else the demo's)")
    p.add_argument("--images", type=Path, default=None, help="folder of COCO jpgs (default: shared, else drawn)")
    p.add_argument("--pool-size", type=int, default=None, help="subsample the pool (default: all; the projection needs all)")
    p.add_argument("--e2e-images", type=int, default=16)
    p.add_argument("--answer-tokens", type=int, default=MILS["realistic_answer_tokens"],
                   help="generator timing's answer length (MILS's answers: ~750 tokens)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override the runtime default (3,000) in the MILS run")
    p.add_argument("--skip", default="", help="comma list of sections: scorer,generator,mils,blip2,llava,vllm")
    p.add_argument("--vllm-url", default=None, help="a running `vllm serve` (OpenAI-compatible /v1 URL)")
    p.add_argument("--vllm-model", default="meta-llama/Meta-Llama-3.1-8B-Instruct", help="the served model's name")
    p.add_argument("--db", default=None, help="store (default: a temporary SQLite file)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.device = args.device or ("cpu" if args.small else "cuda")

    from capstore.backends.cuda_probe import cuda_devices

    if args.device.startswith("cuda") and not cuda_devices():
        print("gpu_backends: no CUDA device is available here; run it on a GPU machine, or pass --small for the "
              "CPU smoke test", file=sys.stderr)
        return 2
    import torch
    import transformers

    from capstore.backends.devices import device_name
    from capstore.store import open_store

    work_dir = tempfile.mkdtemp(prefix="capstore-gpu-")
    args.work = work_dir
    ctx: dict[str, Any] = {"args": args, "store": open_store(args.db or str(Path(work_dir) / "gpu.db"))}
    ctx["pool_file"], ctx["prompt_file"] = _mils_files(args, Path(work_dir))
    ctx["pool"] = list(dict.fromkeys(x.strip() for x in ctx["pool_file"].read_text().splitlines() if x.strip()))
    ctx["template"] = ctx["prompt_file"].read_text()
    ctx["photos"] = bc.coco_variants(args.e2e_images, args.images) or bc.drawn_images(args.e2e_images)
    report = Report(args.json, args.device.startswith("cuda"))
    report.data.update({"device": device_name(args.device), "torch": torch.__version__,
                        "transformers": transformers.__version__, "small": args.small,
                        "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)})
    print(f"device: {report.data['device']}; torch {torch.__version__}; transformers {transformers.__version__}",
          flush=True)
    skip = set(filter(None, args.skip.split(",")))
    sections: list[tuple[str, Callable[[], dict[str, Any] | None]]] = [
        ("scorer", lambda: section_scorer(ctx)),
        ("generator", lambda: section_generator(ctx)),
        ("mils", lambda: section_mils(ctx)),
        ("free", lambda: (ctx.pop("generator", None), ctx.pop("scorer", None), _free()) and None),
        ("blip2", lambda: section_captioner(ctx, "blip2")),
        ("llava", lambda: section_captioner(ctx, "llava")),
        ("vllm", lambda: section_vllm(ctx)),
    ]
    for name, fn in sections:
        if name not in skip:
            report.section(name, fn)
    if "mils_stages" in ctx:
        report.section("projection", lambda: projection(ctx))
    report.data["sections"].pop("free", None)
    bc.write_json(args.json, report.data)
    failures = report.data["failures"]
    print(f"{len(failures)} failure(s)" + "".join(f"\n  {f}" for f in failures), flush=True)
    return 1 if failures else 0


def _mils_files(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """MILS's pool and prompt (shared), else the demo's (written here)."""
    try:
        pool, prompt = args.pool or bc.shared_file(bc.POOL), args.prompt or bc.shared_file(bc.PROMPT)
        if pool.is_file() and prompt.is_file():
            return pool, prompt
    except (FileNotFoundError, SystemExit):
        pass
    from capstore.methods.demo_assets import write_demo_assets

    return write_demo_assets(work / "demo-assets")


if __name__ == "__main__":
    sys.exit(main())
