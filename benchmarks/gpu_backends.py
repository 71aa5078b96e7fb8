"""Device-seconds per image of capstore's backends on a GPU: the REAL architectures, random weights.

Usage (a CUDA machine; nothing is downloaded)::

    python benchmarks/gpu_backends.py --json gpu.json                    # pool/prompt/images from shared
    python benchmarks/gpu_backends.py --pool P.txt --prompt T.txt --images DIR --json gpu.json
    python benchmarks/gpu_backends.py --small --device cpu               # same code path, tiny configs (smoke test)

Every number comes from capstore's own backend classes and their usage events (device-seconds are
measured between two CUDA synchronisations around each call, so they include the host work of the
call too: image decoding, tokenising, the seeded sampler). Weights are random; the architectures are:

- scorer: open_clip ``ViT-SO400M-14-SigLIP`` (MILS's scorer), built from open_clip's own config with
  the CLIP BPE tokenizer instead of the SigLIP hub tokenizer (which cannot be fetched offline): the
  config is registered under a name without "siglip" and its text ``vocab_size`` is 49,408 instead of
  32,000 (only the embedding table changes; context length 16 and every layer are as in SigLIP).
- generator: ``Meta-Llama-3.1-8B-Instruct``'s ``LlamaConfig`` (all 32 layers, vocab 128,256) with a
  byte-level BPE trained on the pool for the prompt (so a prompt has about as many tokens as with
  Llama-3's tokenizer). Random weights never emit the end token, so every answer is exactly
  ``--max-new-tokens`` long (default 750, about 50 candidates x 15 tokens).
- captioners: BLIP-2 ``blip2-opt-2.7b`` (ViT-g + Q-Former + OPT-2.7B) and ``blip2-flan-t5-xl``
  (ViT-g + Q-Former + Flan-T5-XL) configs, 30 new tokens (the backend's default; real captions stop
  after ~10, so this is an upper bound).

The transformers backends load with ``from_pretrained``; here it is swapped for ``from_config`` on
the device (random weights, no 16 GB write and read): the rest of the backend is unchanged.
Then a MILS run through the engine (``--e2e-images`` x ``--e2e-iterations``) gives the cost per stage
from its usage events, and the numbers are projected to COCO's 5,000 test images.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

SCORER_NAME = "capstore-so400m-arch"  # no "siglip" in the name: open_clip would fetch a hub tokenizer
COCO_IMAGES = 5_000
STUDY = {"mils_hours": 116.0, "mils_usd": 291.66, "blip2_minutes": 31.0, "blip2_usd": 0.65}


# -- architectures ------------------------------------------------------------------------------

def scorer_config(small: bool) -> dict[str, Any]:
    import open_clip

    if small:
        from importlib import resources

        cfg = json.loads(resources.files("capstore.backends").joinpath("configs/capstore-tiny-clip.json").read_text())
        return cfg["model_cfg"]
    cfg = open_clip.get_model_config("ViT-SO400M-14-SigLIP")
    assert cfg is not None, "open_clip has no ViT-SO400M-14-SigLIP config"
    text = {k: v for k, v in cfg["text_cfg"].items() if k not in ("hf_tokenizer_name", "tokenizer_kwargs")}
    text["vocab_size"] = 49_408  # the CLIP BPE's ids
    return {**cfg, "text_cfg": text}


def llama_config(tok_len: int, small: bool, special: dict[str, int]):  # -> LlamaConfig
    from transformers import LlamaConfig

    if small:
        dims = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                    num_key_value_heads=1, head_dim=64, vocab_size=max(tok_len, 512))
    else:  # meta-llama/Meta-Llama-3.1-8B-Instruct config.json
        dims = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=128_256, rope_theta=500_000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    return LlamaConfig(**dims, max_position_embeddings=131_072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       **special)


def blip2_config(variant: str, tok, small: bool):  # -> Blip2Config
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig, T5Config

    image_token = tok.convert_tokens_to_ids("<image>")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if small:
        vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=224, patch_size=14)
        qformer = Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     encoder_hidden_size=32)
        text = (OPTConfig(vocab_size=512, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                          word_embed_proj_dim=32, **ids) if variant == "opt" else
                T5Config(vocab_size=512, d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1, num_decoder_layers=1,
                         feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                         decoder_start_token_id=tok.pad_token_id, **ids))
    else:  # Salesforce/blip2-opt-2.7b and blip2-flan-t5-xl: ViT-g/14 (39 layers, 1408) + 12-layer Q-Former
        vision = Blip2VisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                                   num_attention_heads=16, image_size=224, patch_size=14)
        qformer = Blip2QFormerConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, encoder_hidden_size=1408)
        text = (OPTConfig(vocab_size=50_272, hidden_size=2560, ffn_dim=10_240, num_hidden_layers=32,
                          num_attention_heads=32, word_embed_proj_dim=2560, max_position_embeddings=2048, **ids)
                if variant == "opt" else
                T5Config(vocab_size=32_128, d_model=2048, d_ff=5120, d_kv=64, num_heads=32, num_layers=24,
                         num_decoder_layers=24, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                         decoder_start_token_id=tok.pad_token_id, **ids))
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                       num_query_tokens=32, image_token_index=image_token)


@contextmanager
def random_weights(device: str) -> Iterator[None]:
    """``from_pretrained`` of the causal LM and BLIP-2 classes builds from ``config.json`` on ``device``."""
    import torch
    import transformers

    classes = [transformers.AutoModelForCausalLM, transformers.Blip2ForConditionalGeneration]
    saved = [c.__dict__.get("from_pretrained") for c in classes]

    def make(cls):  # type: ignore[no-untyped-def]
        def from_pretrained(_cls, path, dtype=None, **_kw):  # type: ignore[no-untyped-def]
            config = transformers.AutoConfig.from_pretrained(path)
            with torch.device(device):
                if cls is transformers.AutoModelForCausalLM:
                    return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
                return cls._from_config(config, dtype=dtype)
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


def llm_tokenizer(out_dir: Path, pool: list[str], prompt: str):  # -> PreTrainedTokenizerFast
    """A byte-level BPE (32K) trained on the pool and prompt, with a Llama-3-style chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(pool + [prompt] + [f"{random.random():.3f}: " for _ in range(200)],
                            trainers.BpeTrainer(vocab_size=32_000, special_tokens=special,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<pad>")
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                          "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                          "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    fast.save_pretrained(out_dir)
    return fast


# -- measurements -------------------------------------------------------------------------------

def _events(store, since: int) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    return bc.usage_by_stage(store, since_id=since)


def bench_scorer(store, images, pool: list[str], args) -> tuple[Any, dict[str, Any]]:  # type: ignore[no-untyped-def]
    import open_clip

    from capstore.backends.registry import load_backend

    cfg_path = Path(args.work) / f"{SCORER_NAME}.json"
    cfg_path.write_text(json.dumps(scorer_config(args.small)))
    open_clip.add_model_config(cfg_path)
    t0 = time.perf_counter()
    scorer = load_backend("scorer", f"open_clip:{SCORER_NAME}", store, device=args.device, dtype=args.scorer_dtype,
                          batch_size=args.scorer_batch)
    out: dict[str, Any] = {"arch": "ViT-SO400M-14-SigLIP (open_clip config; CLIP BPE tokenizer, text vocab 49,408)",
                           "dtype": str(scorer.dtype), "batch_size": args.scorer_batch, "load_s": time.perf_counter() - t0,
                           "params_m": sum(p.numel() for p in scorer.model.parameters()) / 1e6}
    warm = bc.drawn_images(8, seed=7)
    scorer.encode_images([_ref(b) for b in warm])
    scorer.encode_texts([f"warm-up text number {i}" for i in range(args.scorer_batch)])
    since = bc.last_usage_id(store)
    scorer.encode_images(images)
    ev = _events(store, since)["encode_image"]
    out["images"] = int(ev["images"])
    out["image_s_per_image"] = ev["device_seconds"] / ev["images"]
    out["image_wall_s_per_image"] = ev["wall_seconds"] / ev["images"]
    since = bc.last_usage_id(store)
    scorer.encode_texts(pool)
    ev = _events(store, since)["encode_text"]
    out["pool_lines"] = len(pool)
    out["pool_encode_s"] = ev["device_seconds"]  # the model's work
    out["pool_encode_wall_s"] = ev["wall_seconds"]  # + cache look-up and writing 28K embeddings to the store
    out["pool_lines_per_s"] = len(pool) / ev["device_seconds"]
    with bc.stopwatch() as t:
        again = scorer.encode_texts(pool)
    out["pool_from_cache_s"] = t["s"]
    out["pool_from_cache_lines_per_s"] = len(pool) / t["s"]
    assert again.shape[0] == len(pool)
    return scorer, out


def mils_prompts(template: str, pool: list[str], n: int, seed: int) -> list[str]:
    from capstore.methods.mils import format_prompt

    rng = random.Random(seed)
    return [format_prompt(template, [(t, rng.uniform(0.05, 0.2)) for t in rng.sample(pool, 50)], 50) for _ in range(n)]


def bench_generator(store, pool: list[str], template: str, args) -> tuple[Any, dict[str, Any]]:  # type: ignore[no-untyped-def]
    from capstore.backends.base import CallContext
    from capstore.backends.registry import load_backend

    folder = Path(args.work) / "llama-3.1-8b-arch"
    tok = llm_tokenizer(folder, pool, template)
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    llama_config(len(tok), args.small, special).save_pretrained(folder)
    t0 = time.perf_counter()
    with random_weights(args.device):
        gen = load_backend("generator", f"hf:{folder}", store, device=args.device, dtype=args.gen_dtype,
                           max_new_tokens=args.max_new_tokens, batch_size=16)
    out: dict[str, Any] = {"arch": "Meta-Llama-3.1-8B-Instruct config (32 layers, vocab 128,256)",
                           "dtype": str(gen.dtype), "load_s": time.perf_counter() - t0,
                           "params_m": sum(p.numel() for p in gen.model.parameters()) / 1e6,
                           "max_new_tokens": args.max_new_tokens, "batches": {}}
    gen.params["max_new_tokens"] = 8  # warm-up: kernels, allocator
    gen.generate(mils_prompts(template, pool, 2, seed=99), [1, 2], CallContext())
    gen.params["max_new_tokens"] = args.max_new_tokens
    for batch in args.gen_batches:
        gen.batch_size = batch
        prompts = mils_prompts(template, pool, batch, seed=batch)
        since = bc.last_usage_id(store)
        gen.generate(prompts, list(range(1000 + batch, 1000 + 2 * batch)), CallContext())
        ev = _events(store, since)["generate"]
        out["batches"][batch] = {
            "prompts": batch, "device_s": ev["device_seconds"], "tokens_in_per_prompt": ev["tokens_in"] / batch,
            "tokens_out_per_prompt": ev["tokens_out"] / batch, "tokens_out_per_s": ev["tokens_out"] / ev["device_seconds"],
            "s_per_prompt": ev["device_seconds"] / batch}
    return gen, out


def bench_mils_run(store, scorer, gen, pool_file: Path, prompt_file: Path, images: list[bytes], args) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from capstore.runs.config import RunConfig
    from capstore.runs.create import create_run
    from capstore.runs.engine import Backends, work

    bc.add_image_dataset(store, "gpu-e2e", images)
    gen.batch_size = 16
    cfg = RunConfig(method="mils", dataset="gpu-e2e", scorer=f"open_clip:{SCORER_NAME}", generator=f"hf:{gen_folder(args)}",
                    iterations=args.e2e_iterations, keep=50, requested=50, batch_images=len(images),
                    generator_params=dict(gen.params), device=args.device)
    run_id = create_run(store, cfg, pool_file=str(pool_file), prompt_file=str(prompt_file))
    backends = Backends(store, cfg)
    backends.__dict__["_scorer"], backends.__dict__["_generator"] = scorer, gen  # the backends built above
    with bc.stopwatch() as t:
        summary = work(store, run_id, backends=backends, progress=False)
    with bc.stopwatch() as noop:
        work(store, run_id, backends=backends, progress=False, resume=True)
    return {"images": len(images), "iterations": args.e2e_iterations, "status": summary.status, "wall_s": t["s"],
            "resume_finished_run_s": noop["s"], "stages": bc.usage_by_stage(store, run_id)}


def gen_folder(args) -> Path:  # type: ignore[no-untyped-def]
    return Path(args.work) / "llama-3.1-8b-arch"


def bench_captioner(store, variant: str, images, args) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import torch
    from transformers import Blip2Processor, BlipImageProcessor

    from capstore.backends.registry import load_backend
    from capstore.backends.tiny import build_tokenizer

    folder = Path(args.work) / f"blip2-{variant}-arch"
    tok = build_tokenizer(folder)
    blip2_config(variant, tok, args.small).save_pretrained(folder)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}), tokenizer=tok,
                   num_query_tokens=32).save_pretrained(folder)
    dtype = args.t5_dtype if variant == "t5" else args.blip2_dtype
    t0 = time.perf_counter()
    with random_weights(args.device):
        cap = load_backend("captioner", f"blip2:{folder}", store, device=args.device, dtype=dtype, max_new_tokens=30)
    name = {"opt": "Salesforce/blip2-opt-2.7b", "t5": "Salesforce/blip2-flan-t5-xl"}[variant]
    out: dict[str, Any] = {"arch": f"{name} config", "dtype": str(cap.dtype), "load_s": time.perf_counter() - t0,
                           "params_m": sum(p.numel() for p in cap.model.parameters()) / 1e6, "max_new_tokens": 30,
                           "batches": {}}
    cap.caption([_ref(b) for b in bc.drawn_images(2, seed=11 + len(variant))], [0, 1])
    start = 0
    for batch in args.cap_batches:
        cap.batch_size = batch
        chunk = images[start : start + args.cap_images]
        start += args.cap_images
        since = bc.last_usage_id(store)
        cap.caption(chunk, list(range(len(chunk))))
        ev = _events(store, since)["caption"]
        out["batches"][batch] = {"images": int(ev["images"]), "device_s": ev["device_seconds"],
                                 "s_per_image": ev["device_seconds"] / ev["images"],
                                 "tokens_out_per_image": ev["tokens_out"] / ev["images"]}
    del cap
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def _ref(data: bytes):  # type: ignore[no-untyped-def]
    from capstore.backends.base import ImageRef
    from capstore.store.content import sha256_bytes

    return ImageRef(sha256_bytes(data), data)


# -- projection ---------------------------------------------------------------------------------

def project(res: dict[str, Any], iterations: int = 10, candidates: int = 50, gen_batch: int = 16) -> dict[str, Any]:
    """Device-hours for COCO's 5,000 images from the measured rates (MILS's settings)."""
    sc, ge = res["scorer"], res["generator"]["batches"]
    g = ge.get(gen_batch) or ge[min(ge)]
    n = COCO_IMAGES
    parts = {
        "pool once (capstore)": sc["pool_lines"] / sc["pool_lines_per_s"],
        "images": n * sc["image_s_per_image"],
        "generation": n * iterations * g["s_per_prompt"],
        "candidate scoring": n * iterations * candidates / sc["pool_lines_per_s"],
    }
    out: dict[str, Any] = {"assumptions": f"{n} images, {iterations} iterations, {candidates} new candidates per "
                                          f"image and iteration, generator batch {gen_batch}, "
                                          f"{g['tokens_out_per_prompt']:.0f} tokens per answer",
                           "mils_parts_h": {k: v / 3600 for k, v in parts.items()}}
    out["mils_h"] = sum(parts.values()) / 3600
    out["mils_original_pool_per_image_h"] = (sum(parts.values()) - parts["pool once (capstore)"]
                                             + n * sc["pool_lines"] / sc["pool_lines_per_s"]) / 3600
    for variant, cap in res.get("captioners", {}).items():
        if "batches" in cap:
            best = min(b["s_per_image"] for b in cap["batches"].values())
            out[f"blip2_{variant}_min"] = n * best / 60
    out["study"] = STUDY
    return out


# -- main -----------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", type=Path, default=None, help="MILS pool (default: shared)")
    p.add_argument("--prompt", type=Path, default=None, help="MILS prompt (default: shared)")
    p.add_argument("--images", type=Path, default=None, help="folder of COCO jpgs (default: shared)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="tiny configs: a smoke test of this script")
    p.add_argument("--db", default=None, help="store (default: a temporary SQLite file)")
    p.add_argument("--n-images", type=int, default=256)
    p.add_argument("--scorer-batch", type=int, default=256)
    p.add_argument("--scorer-dtype", default="float16")
    p.add_argument("--gen-dtype", default="bfloat16")
    p.add_argument("--blip2-dtype", default="float16")
    p.add_argument("--t5-dtype", default="bfloat16")
    p.add_argument("--max-new-tokens", type=int, default=750)
    p.add_argument("--gen-batches", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    p.add_argument("--cap-batches", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    p.add_argument("--cap-images", type=int, default=64)
    p.add_argument("--captioners", default="opt,t5")
    p.add_argument("--e2e-images", type=int, default=20)
    p.add_argument("--e2e-iterations", type=int, default=2)
    p.add_argument("--skip", default="", help="comma list of sections to skip: scorer,generator,e2e,captioners")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch

    from capstore.backends.devices import device_name
    from capstore.store import open_store

    pool_file = args.pool or bc.shared_file(bc.POOL)
    prompt_file = args.prompt or bc.shared_file(bc.PROMPT)
    pool = list(dict.fromkeys(x.strip() for x in pool_file.read_text().splitlines() if x.strip()))
    template = prompt_file.read_text()
    skip = set(filter(None, args.skip.split(",")))
    work = tempfile.mkdtemp(prefix="capstore-gpu-")
    args.work = work
    store = open_store(args.db or str(Path(work) / "gpu.db"))
    photos = bc.coco_variants(args.n_images + 2 * args.cap_images, args.images) or bc.drawn_images(args.n_images + 2 * args.cap_images)
    refs = [_ref(b) for b in photos]
    res: dict[str, Any] = {"device": device_name(args.device), "torch": torch.__version__, "small": args.small,
                           "date": time.strftime("%Y-%m-%d")}
    import transformers

    res["transformers"] = transformers.__version__

    def save() -> None:
        bc.write_json(args.json, res)

    print(f"device: {res['device']}; torch {torch.__version__}; transformers {transformers.__version__}", flush=True)
    scorer = gen = None
    if "scorer" not in skip:
        scorer, res["scorer"] = bench_scorer(store, refs[: args.n_images], pool, args)
        print("scorer", json.dumps(res["scorer"], indent=1), flush=True)
        save()
    if "generator" not in skip:
        gen, res["generator"] = bench_generator(store, pool, template, args)
        print("generator", json.dumps(res["generator"], indent=1), flush=True)
        save()
    if "e2e" not in skip and scorer is not None and gen is not None:
        res["mils_run"] = bench_mils_run(store, scorer, gen, pool_file, prompt_file,
                                         photos[args.n_images : args.n_images + args.e2e_images], args)
        print("mils_run", json.dumps(res["mils_run"], indent=1), flush=True)
        save()
    del gen
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if "captioners" not in skip:
        res["captioners"] = {}
        for variant in filter(None, args.captioners.split(",")):
            try:
                res["captioners"][variant] = bench_captioner(store, variant, refs[args.n_images - args.cap_images:],
                                                             args)
            except Exception as exc:  # one variant failing must not lose the others
                res["captioners"][variant] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            print(f"captioner {variant}", json.dumps(res["captioners"][variant], indent=1), flush=True)
            save()
    if "scorer" in res and "generator" in res:
        res["projection"] = project(res)
        print("projection", json.dumps(res["projection"], indent=1), flush=True)
    save()


if __name__ == "__main__":
    main()
