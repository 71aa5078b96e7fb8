"""The demo's CLIP: a tiny open_clip CLIP, trained on freshly drawn pictures in two phases.

First the image tower alone learns what is drawn, through a classifier of count, shape, colour and
place on its embedding (used for training only: a small ViT learns shapes and counts slowly from a
contrastive loss alone). Then both towers train contrastively: for each picture of a batch, a full
true description (a reference, or its truth in the pool's grammar) and a near miss (its truth with
the count, shape or colour wrong), for some a partial one, plus a few random descriptions. The loss
is CLIP's symmetric InfoNCE with in-batch negatives and soft targets, because several texts of a
batch can be true of one picture: a picture's target weight on a text grows with how much of the
picture the text truly says (none on a text that says anything false). So the scorer ranks a
picture's own description above another picture's, and a fuller true description above a partial
one, which is what MILS's keep-the-best step needs. Saved as ``open_clip_config.json`` +
safetensors + the world tokenizer, loaded by the scorer with
``open_clip.create_model_and_transforms("local-dir:…")``.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from capstore.demo_models.recipe import seed_everything
from capstore.demo_models.tokenizer import VOCAB_SIZE, build_world_tokenizer
from capstore.demo_models.world import (ATTRIBUTE_SIZES, Picture, any_text, attribute_ids, attribute_loss,
                                        draw_pictures, fit, full_text, near_miss, partial_text)

CONFIG = {
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        # The world tokenizer, saved in the model folder (open_clip's local-dir reads it from there).
        "text_cfg": {"context_length": 16, "vocab_size": VOCAB_SIZE, "width": 64, "heads": 2, "layers": 1,
                     "hf_tokenizer_name": "capstore-demo-world", "pool_type": "eos", "eos_id": 2},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}
PARAMS: dict[str, Any] = {"seed": 11, "pictures": 1024, "vision_steps": 300, "steps": 150, "batch": 32,
                          "partial_texts": 16, "random_texts": 8, "lr": 1e-3, "sharpness": 2.0, "aux": 1.0,
                          "config": CONFIG}


def train_clip(folder: Path, params: dict[str, Any] = PARAMS) -> int:
    """Train the demo CLIP into ``folder``; returns the number of optimiser steps."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    (folder / "open_clip_config.json").write_text(json.dumps(params["config"], indent=2))
    build_world_tokenizer(folder, for_clip=True)
    seed_everything(params["seed"])
    name = f"local-dir:{folder.resolve()}"
    logging.disable(logging.WARNING)  # open_clip warns that the (new) model has no weights yet
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, load_weights=False)
    finally:
        logging.disable(logging.NOTSET)
    tokenizer = open_clip.get_tokenizer(name)
    pictures = draw_pictures(params["seed"], params["pictures"])
    pixels = torch.stack([preprocess(p.image) for p in pictures])
    attributes = torch.tensor([attribute_ids(p) for p in pictures])
    heads = torch.nn.Linear(params["config"]["model_cfg"]["embed_dim"], sum(ATTRIBUTE_SIZES))  # training only
    rng = random.Random(params["seed"])
    model.train()
    # Phase 1: the image tower alone learns what is drawn (a ViT learns shapes and counts slowly from
    # a contrastive loss alone); phase 2: both towers, contrastively, the classifier kept as a regulariser.
    phases = (("vision", params["vision_steps"], [*model.visual.parameters(), *heads.parameters()]),
              ("clip", params["steps"], [*model.parameters(), *heads.parameters()]))
    for phase, steps, weights in phases:
        optimiser = torch.optim.AdamW(weights, lr=params["lr"], weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, params["lr"], total_steps=steps, pct_start=0.1)
        for _ in range(steps):
            idx = rng.sample(range(len(pictures)), params["batch"])
            features = model.encode_image(pixels[idx])
            loss = params["aux"] * attribute_loss(heads(features), attributes[idx])
            if phase == "clip":
                loss = loss + _contrastive_loss(model, tokenizer, features, [pictures[i] for i in idx], rng, params)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return int(params["vision_steps"] + params["steps"])


def _contrastive_loss(model, tokenizer, features, batch: list[Picture], rng: random.Random,  # type: ignore[no-untyped-def]
                      params: dict[str, Any]):
    """Symmetric InfoNCE over the batch's pictures and texts, with soft targets from what each text says."""
    import torch
    import torch.nn.functional as F

    texts = ([full_text(p, rng) for p in batch] + [near_miss(p, rng) for p in batch]
             + [partial_text(p, rng) for p in batch[: params["partial_texts"]]]
             + [any_text(rng) for _ in range(params["random_texts"])])
    fits = torch.tensor([[fit(p, t.says) for t in texts] for p in batch], dtype=torch.float)
    image = F.normalize(features, dim=-1)
    text = F.normalize(model.encode_text(tokenizer([t.text for t in texts])), dim=-1)
    logits = model.logit_scale.exp() * image @ text.T
    # picture -> texts: weight exp(sharpness * fit) on the true texts; text -> pictures: those it fits
    to_text = torch.where(fits > 0, params["sharpness"] * fits, torch.tensor(float("-inf"))).softmax(dim=1)
    has_fit = fits.sum(dim=0) > 0
    to_image = (fits > 0).float()[:, has_fit]
    return (F.cross_entropy(logits, to_text)
            + F.cross_entropy(logits.T[has_fit], (to_image / to_image.sum(dim=0)).T)) / 2
