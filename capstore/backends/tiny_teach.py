"""Teaching the tiny Llama the shape of a MILS answer, for the demo.

A random-weight model answers with gibberish, so a demo MILS run would never get past its pool:
every iteration would record ``unparsable_output`` and add nothing. A few seconds of next-token
training, on prompts built exactly as MILS builds them (the demo template filled with scored pool
lines) and answers made of numbered pool lines, teach it to write ``N. text`` lines. What it writes
is still not about the image: the scorer decides which of its lines are kept, as in MILS.
The taught model is saved like any other and loaded by the normal ``hf:`` backend.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from capstore.methods.mils import format_prompt

BATCH = 8
KEPT_IN_PROMPT = 4


def teach_llm(src: Path, out: Path, lines: Sequence[str], template: str, *, seed: int = 0, steps: int = 250,
              answer_lines: int = 6) -> Path:
    """Train a copy of the causal LM in ``src`` to answer MILS prompts with numbered ``lines``; saved to ``out``.

    Deterministic from ``seed``; a complete earlier result in ``out`` is reused as is.
    """
    done = out / ".complete"
    marker = f"{seed}:{steps}:{answer_lines}:{len(lines)}"
    if done.exists() and done.read_text() == marker:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(src).train()
    rng = random.Random(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        ids, labels = _batch(tokenizer, [_example(tokenizer, template, lines, rng, answer_lines) for _ in range(BATCH)])
        loss = model(input_ids=ids, attention_mask=ids != tokenizer.pad_token_id, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    done.write_text(marker)  # written last: a half-written folder is taught again
    return out


def _example(tokenizer, template: str, lines: Sequence[str], rng: random.Random,  # type: ignore[no-untyped-def]
             answer_lines: int) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one MILS-shaped exchange."""
    kept = [(text, rng.uniform(0.05, 0.35)) for text in rng.sample(list(lines), KEPT_IN_PROMPT)]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": format_prompt(template, kept, answer_lines)}],
                                           tokenize=False, add_generation_prompt=True)
    answer = "".join(f" {k}. {text}\n" if k == 1 else f"{k}. {text}\n"
                     for k, text in enumerate(rng.sample(list(lines), answer_lines), 1))
    return (tokenizer(prompt, add_special_tokens=False)["input_ids"],
            tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])


def _batch(tokenizer, examples: list[tuple[list[int], list[int]]]):  # type: ignore[no-untyped-def]
    """Right-padded input ids, and labels that train on the answers only."""
    import torch

    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        seq = prompt + answer
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(prompt) : len(seq)] = torch.tensor(answer)
    return ids, labels
