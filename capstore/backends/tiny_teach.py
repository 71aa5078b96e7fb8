"""Teaching a tiny causal LM to be a MILS generator in the demo's world: recombine the kept phrases.

A random-weight model answers with gibberish, so a MILS run would never get past its pool. Here the
model is trained, by next-token loss on the answer only, on prompts built exactly as MILS builds
them (the demo template filled with ``score: text`` lines, best first) and answers of numbered full
descriptions whose count, colour, thing and place are each taken from the prompt's lines, mostly
from the best ones. So it learns what MILS asks of its LLM: keep what scores well, combine it, and
write ``N. text`` lines. It never sees a picture: which of its lines are true is for the scorer
to find, as in MILS. The prompts' lines are simulated MILS states: a hidden scene, and lines that
say parts of it (true more often than not) scored by how much of them is true.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from capstore.datasets.demo import COLOURS, NUMBERS, SCENES, SHAPES
from capstore.methods.demo_assets import COLOURS as POOL_COLOURS
from capstore.methods.demo_assets import PLACES, THINGS, Phrase, parse_phrase
from capstore.methods.mils import format_prompt

SLOTS = ("count", "colour", "thing", "place")
PICK = 0.6  # chance of taking a slot's value from the next kept line that has one (best lines first)


def kept_lines(rng: random.Random, keep: int) -> list[tuple[str, float]]:
    """A simulated MILS kept set for a hidden scene: (text, score) pairs, a phrase each, all different."""
    truth = Phrase(rng.choice(list(NUMBERS)), rng.choice(list(COLOURS)), rng.choice(SHAPES),
                   SCENES[rng.choice(list(SCENES))][0])
    others = {"count": list(NUMBERS), "colour": list(POOL_COLOURS), "thing": list(THINGS), "place": list(PLACES)}
    found: dict[str, float] = {}
    while len(found) < keep:
        named = rng.sample(SLOTS[1:], rng.choice((1, 2, 2, 3)))
        values, right = {}, 0
        for slot in SLOTS:
            if slot != "count" and slot not in named:
                continue
            true_value = getattr(truth, slot)
            ok = rng.random() < 0.7
            values[slot] = true_value if ok else rng.choice([v for v in others[slot] if v != true_value])
            right += 1 if ok else -2
        phrase = Phrase(values.pop("count"), **values)
        found.setdefault(phrase.text(), 0.25 + 0.04 * right + rng.uniform(-0.03, 0.03))
    return sorted(found.items(), key=lambda ts: -ts[1])


def recombined(kept: Sequence[tuple[str, float]], rng: random.Random, requested: int) -> list[str]:
    """Up to ``requested`` new full descriptions, each slot's value taken from a kept line (best first, mostly)."""
    phrases = [p for p in (parse_phrase(text) for text, _ in kept) if p is not None]
    seen = {text for text, _ in kept}
    out: list[str] = []
    for _ in range(requested * 4):
        if len(out) == requested:
            break
        values = {slot: _pick(phrases, slot, rng) for slot in SLOTS}
        text = Phrase(**values).text()  # type: ignore[arg-type]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _pick(phrases: list[Phrase], slot: str, rng: random.Random) -> Any:
    """The value of ``slot`` in a kept line: each line that has one, best first, is taken with probability PICK."""
    having = [getattr(p, slot) for p in phrases if getattr(p, slot) is not None]
    if not having:
        return None
    for value in having:
        if rng.random() < PICK:
            return value
    return rng.choice(having)


def example(template: str, rng: random.Random, keep: int, requested: int) -> tuple[str, str]:
    """(MILS prompt, numbered answer) of one teaching exchange."""
    kept = kept_lines(rng, keep)
    answer = "".join(f"{k}. {text}\n" for k, text in enumerate(recombined(kept, rng, requested), 1))
    return format_prompt(template, kept, requested), answer


def teach(model, tokenizer, template: str, params: dict[str, Any]) -> int:  # type: ignore[no-untyped-def]
    """Train ``model`` in place on ``params['steps']`` batches of teaching exchanges; returns the steps."""
    import torch
    import torch.nn.functional as F

    rng = random.Random(params["seed"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, params["lr"], total_steps=params["steps"], pct_start=0.1)
    model.train()
    for _ in range(params["steps"]):
        pairs = [example(template, rng, params["keep"], params["requested"]) for _ in range(params["batch"])]
        ids, mask, targets = _batch(tokenizer, [_encode(tokenizer, p, a) for p, a in pairs])
        # Left-padded as the generator pads, so the answers end together: only their logits are computed.
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       logits_to_keep=targets.shape[1] + 1).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    return int(params["steps"])


def _encode(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    """Prompt ids as the ``hf:`` generator sends them (chat template), and answer ids ending in eos."""
    chat = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return (tokenizer(chat, add_special_tokens=False)["input_ids"],
            tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])


def _batch(tokenizer, examples: list[tuple[list[int], list[int]]]):  # type: ignore[no-untyped-def]
    """Left-padded prompt + answer ids, their mask, and the answer tokens right-aligned as targets
    (-100 where a shorter answer leaves room) for the last positions' predictions."""
    import torch

    width = max(len(p) + len(a) for p, a in examples)
    answer_width = max(len(a) for _, a in examples)
    ids = torch.full((len(examples), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), answer_width), -100, dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        seq = prompt + answer
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
        targets[row, answer_width - len(answer) :] = torch.tensor(answer)
    return ids, mask, targets
