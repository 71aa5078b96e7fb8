"""Seeded sampling that does not depend on what else is in the batch.

transformers' ``do_sample`` draws from one global RNG, so a prompt's output would change with its
batch neighbours, and a resumed run (other batches) would differ from an uninterrupted one.
Instead we decode greedily over logits perturbed by Gumbel noise drawn from a per-row generator
seeded with that request's seed: argmax(logits/T + Gumbel) is an exact sample of softmax(logits/T)
(the Gumbel-max trick), restricted to the top-p nucleus.
"""

from __future__ import annotations

from typing import Sequence


def make_sampler(seeds: Sequence[int], temperature: float, top_p: float, device: str):  # -> LogitsProcessor
    """A logits processor for greedy decoding that samples row i with ``seeds[i]``."""
    import torch
    from transformers import LogitsProcessor

    class GumbelNucleus(LogitsProcessor):
        def __init__(self) -> None:
            self.generators = [torch.Generator(device="cpu").manual_seed(int(s) % (2**63)) for s in seeds]

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            logits = scores.float() / max(temperature, 1e-6)
            if top_p < 1.0:
                sorted_logits, order = logits.sort(dim=-1, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop_sorted = cum - sorted_logits.softmax(-1) > top_p  # keep the first token past top_p
                drop = drop_sorted.scatter(-1, order, drop_sorted)
                logits = logits.masked_fill(drop, float("-inf"))
            noise = torch.stack([
                torch.rand(logits.shape[-1], generator=g).clamp_(1e-10, 1 - 1e-10) for g in self.generators
            ]).to(logits.device)
            return logits - torch.log(-torch.log(noise))

    return GumbelNucleus()


def count_new_tokens(sequences, prompt_len: int, eos_id: int | None, pad_id: int | None) -> list[int]:  # type: ignore[no-untyped-def]
    """Generated tokens per row, up to and including the first eos."""
    counts = []
    for row in sequences[:, prompt_len:].tolist():
        n = 0
        for tok in row:
            if tok == pad_id and tok != eos_id:
                break
            n += 1
            if tok == eos_id:
                break
        counts.append(n)
    return counts
