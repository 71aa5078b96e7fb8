"""The demo's generator: a tiny Llama with the world tokenizer, taught to recombine MILS's kept phrases.

See ``backends/tiny_teach.py`` for what it is taught. Saved with ``save_pretrained`` and loaded by
the ``hf:`` generator backend like any causal LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capstore.backends.tiny_teach import teach
from capstore.demo_models.recipe import seed_everything
from capstore.demo_models.tokenizer import VOCAB_SIZE, build_world_tokenizer
from capstore.methods.demo_assets import DEMO_PROMPT

# keep and requested are the demo MILS run's own (the answer shape it is taught to write).
PARAMS: dict[str, Any] = {"seed": 14, "steps": 250, "batch": 16, "lr": 3e-3, "keep": 5, "requested": 5,
                          "width": 64, "layers": 2, "heads": 2}


def train_llm(folder: Path, params: dict[str, Any] = PARAMS) -> int:
    """Build and teach the demo Llama into ``folder``; returns the number of optimiser steps."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_world_tokenizer(folder)
    w = params["width"]
    seed_everything(params["seed"])
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=w, intermediate_size=2 * w, num_hidden_layers=params["layers"],
        num_attention_heads=params["heads"], num_key_value_heads=params["heads"], head_dim=w // params["heads"],
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    steps = teach(model, tok, DEMO_PROMPT, params)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    return steps
