"""The demo's BLIP-2 and LLaVA: the tiny architectures, trained to caption drawn pictures.

As in the real models, the image tower is a CLIP's, frozen: the demo CLIP's, converted to
transformers' layout (``clip_vision_weights``). The rest (BLIP-2's query tokens, Q-Former and OPT;
LLaVA's projector and Llama) is trained with next-token loss on captions of freshly drawn pictures,
written in one of the references' styles (BLIP-2 the short one, "Two red circles on a green
meadow."; LLaVA the "There are …" one), given the picture exactly as the captioner backend gives it:
BLIP-2 with an empty prompt after its query tokens, LLaVA after its chat template's question. Saved
with their processors and loaded by the backends with ``from_pretrained``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from capstore.backends.captioners.llava import LlavaCaptioner
from capstore.demo_models.clip import CONFIG
from capstore.demo_models.recipe import seed_everything
from capstore.demo_models.tokenizer import VOCAB_SIZE, build_world_tokenizer
from capstore.demo_models.world import Picture, draw_pictures

SPREAD_SEED = 15
IMAGE_SIZE = CONFIG["model_cfg"]["vision_cfg"]["image_size"]  # the demo CLIP's: its image tower is theirs
BLIP2_PARAMS: dict[str, Any] = {"seed": 12, "pictures": 1024, "steps": 300, "batch": 32, "lr": 6e-3, "style": 0,
                                "width": 64, "query_tokens": 8, "qformer_layers": 1, "freeze_vision": True}
LLAVA_PARAMS: dict[str, Any] = {"seed": 13, "pictures": 1024, "steps": 300, "batch": 32, "lr": 3e-3, "style": 4,
                                "width": 64, "layers": 2, "freeze_vision": True}


def train_blip2(folder: Path, clip: Path, params: dict[str, Any] = BLIP2_PARAMS) -> int:
    """Build and train the demo BLIP-2 (ViT + Q-Former + OPT) into ``folder``; returns optimiser steps."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, OPTConfig)

    tok = build_world_tokenizer(folder)
    w, n_query = params["width"], params["query_tokens"]
    cfg = Blip2Config(
        vision_config=Blip2VisionConfig(**_vision_shape(), layer_norm_eps=1e-5).to_dict(),
        qformer_config=Blip2QFormerConfig(hidden_size=w, intermediate_size=2 * w,
                                          num_hidden_layers=params["qformer_layers"], cross_attention_frequency=1,
                                          num_attention_heads=2, encoder_hidden_size=_vision_shape()["hidden_size"],
                                          vocab_size=VOCAB_SIZE, hidden_dropout_prob=0.0,
                                          attention_probs_dropout_prob=0.0).to_dict(),
        text_config=OPTConfig(vocab_size=VOCAB_SIZE, hidden_size=w, ffn_dim=2 * w, num_hidden_layers=2,
                              num_attention_heads=2, word_embed_proj_dim=w, max_position_embeddings=128, dropout=0.0,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id).to_dict(),
        num_query_tokens=n_query, image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    seed_everything(params["seed"])
    model = Blip2ForConditionalGeneration(cfg)
    model.query_tokens.data.normal_(0.0, cfg.initializer_range)  # as LAVIS; transformers' zeros make the queries alike
    _use_clip_tower(model.vision_model, clip, "blip2", params["freeze_vision"])
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                               tokenizer=tok, num_query_tokens=n_query)
    prompt = [cfg.image_token_index] * n_query  # what the backend's empty prompt becomes
    steps = _train(model, processor, tok, prompt, params)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return steps


def train_llava(folder: Path, clip: Path, params: dict[str, Any] = LLAVA_PARAMS) -> int:
    """Build and train the demo LLaVA (CLIP tower + projector + Llama) into ``folder``; returns optimiser steps."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from capstore.backends.tiny import CHAT_TEMPLATE

    tok = build_world_tokenizer(folder)
    w = params["width"]
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**_vision_shape(), hidden_act="gelu", layer_norm_eps=1e-5).to_dict(),
        text_config=LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=w, intermediate_size=2 * w,
                                num_hidden_layers=params["layers"], num_attention_heads=2, num_key_value_heads=2,
                                head_dim=w // 2,
                                max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).to_dict(),
        # "full": the class token too, which carries what the CLIP learned to say about the whole picture
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    seed_everything(params["seed"])
    model = LlavaForConditionalGeneration(cfg)
    _use_clip_tower(model.model.vision_tower, clip, "clip", params["freeze_vision"])
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tok, patch_size=_vision_shape()["patch_size"], vision_feature_select_strategy="full",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": LlavaCaptioner.default_prompt}]}]
    text = processor.apply_chat_template(question, add_generation_prompt=True)
    prompt = processor(images=[_blank()], text=[text], return_tensors="pt")["input_ids"][0].tolist()
    steps = _train(model, processor, tok, prompt, params)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return steps


def _vision_shape() -> dict[str, int]:
    """The demo CLIP's image tower, in transformers' terms."""
    v = CONFIG["model_cfg"]["vision_cfg"]
    return {"hidden_size": v["width"], "intermediate_size": 4 * v["width"], "num_hidden_layers": v["layers"],
            "num_attention_heads": v["width"] // v["head_width"], "image_size": v["image_size"],
            "patch_size": v["patch_size"]}


def _use_clip_tower(tower, clip: Path, style: str, freeze: bool) -> None:  # type: ignore[no-untyped-def]
    """Start ``tower`` from the demo CLIP's image encoder (frozen, as LLaVA and BLIP-2 freeze theirs, or not)."""
    tower.load_state_dict(clip_vision_weights(clip, style))
    tower.requires_grad_(not freeze)


def clip_vision_weights(clip_folder: Path, style: str) -> dict[str, Any]:
    """The demo CLIP's image tower as a transformers ``style`` ("clip" or "blip2") vision model's state dict.

    open_clip's fused attention projection splits into q/k/v (CLIP) or stays fused (BLIP-2). BLIP-2's
    ViT has no pre-LayerNorm: it is folded into the patch, class and position embeddings, taking each
    token's spread as the mean spread over drawn pictures (what LayerNorm divides by varies little).
    """
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_folder.resolve()}")
    visual = model.visual.state_dict()
    if style == "clip":
        out = {"embeddings.class_embedding": visual["class_embedding"],
               "embeddings.patch_embedding.weight": visual["conv1.weight"],
               "embeddings.position_embedding.weight": visual["positional_embedding"],
               "pre_layrnorm.weight": visual["ln_pre.weight"], "pre_layrnorm.bias": visual["ln_pre.bias"]}
    else:
        scale = visual["ln_pre.weight"] / _token_spread(model.visual, preprocess)

        def fold(v):  # type: ignore[no-untyped-def]  # LayerNorm's centring and scaling, as a linear map
            return (v - v.mean(-1, keepdim=True)) * scale

        weight = visual["conv1.weight"]
        out = {"embeddings.class_embedding": fold(visual["class_embedding"])[None, None],
               "embeddings.patch_embedding.weight": (weight - weight.mean(0, keepdim=True)) * scale[:, None, None, None],
               "embeddings.patch_embedding.bias": weight.new_zeros(weight.shape[0]),
               "embeddings.position_embedding": (fold(visual["positional_embedding"]) + visual["ln_pre.bias"])[None]}
    out["post_layernorm.weight"], out["post_layernorm.bias"] = visual["ln_post.weight"], visual["ln_post.bias"]
    n_layers = 1 + max(int(k.split(".")[2]) for k in visual if k.startswith("transformer.resblocks."))
    for i in range(n_layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"),
                     ("attn.out_proj", "self_attn.out_proj" if style == "clip" else "self_attn.projection")):
            for part in ("weight", "bias"):
                out[f"{dst}{b}.{part}"] = visual[f"{src}{a}.{part}"]
        for part in ("weight", "bias"):
            fused = visual[f"{src}attn.in_proj_{part}"]
            if style == "clip":
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), fused.chunk(3)):
                    out[f"{dst}self_attn.{name}.{part}"] = chunk
            else:
                out[f"{dst}self_attn.qkv.{part}"] = fused
    return {k: v.clone() for k, v in out.items()}


def _token_spread(visual, preprocess) -> float:  # type: ignore[no-untyped-def]
    """The mean standard deviation (over channels) of the image tower's input tokens on drawn pictures."""
    import torch

    pixels = torch.stack([preprocess(p.image) for p in draw_pictures(SPREAD_SEED, 64)])
    with torch.no_grad():
        patches = visual.conv1(pixels).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.expand(len(pixels), 1, -1)
        tokens = torch.cat([cls, patches], dim=1) + visual.positional_embedding
    return float(tokens.std(dim=-1, unbiased=False).mean())


def _train(model, processor, tok, prompt: list[int], params: dict[str, Any]) -> int:  # type: ignore[no-untyped-def]
    """Next-token training on (picture, caption in ``params['style']``) after the fixed ``prompt`` ids."""
    import torch

    pictures = draw_pictures(params["seed"], params["pictures"])
    pixels = processor.image_processor([p.image for p in pictures], return_tensors="pt")["pixel_values"]
    captions = [_caption_ids(tok, p, params["style"]) for p in pictures]
    rng = random.Random(params["seed"])
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params["lr"], weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, params["lr"], total_steps=params["steps"], pct_start=0.1)
    model.train()
    for _ in range(params["steps"]):
        idx = rng.sample(range(len(pictures)), params["batch"])
        ids, mask, labels = _batch(prompt, [captions[i] for i in idx], tok.pad_token_id)
        loss = model(pixel_values=pixels[idx], input_ids=ids, attention_mask=mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    return int(params["steps"])


def _caption_ids(tok, picture: Picture, style: int) -> list[int]:  # type: ignore[no-untyped-def]
    return tok(picture.scene.references()[style], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def _batch(prompt: list[int], answers: list[list[int]], pad: int):  # type: ignore[no-untyped-def]
    """Right-padded ids, attention mask and labels (the answers only) of prompt + answer rows."""
    import torch

    width = len(prompt) + max(map(len, answers))
    ids = torch.full((len(answers), width), pad, dtype=torch.long)
    labels = torch.full((len(answers), width), -100, dtype=torch.long)
    for row, answer in enumerate(answers):
        ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        labels[row, len(prompt) : len(prompt) + len(answer)] = torch.tensor(answer)
    return ids, ids != pad, labels


def _blank():  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))


