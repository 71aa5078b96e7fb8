"""Seeded sampling that does not depend on what else is in the batch, and honest output lengths.

transformers' ``do_sample`` draws from one global RNG, so a prompt's output would change with its
batch neighbours, and a resumed run (other batches) would differ from an uninterrupted one.
Instead we decode greedily over logits perturbed by Gumbel noise drawn from a per-row generator
seeded with that request's seed: argmax(logits/T + Gumbel) is an exact sample of softmax(logits/T)
(the Gumbel-max trick), restricted to the top-p nucleus.

On CPU the noise is drawn exactly as it always was (CPU generators, one row of uniforms per step).
On a GPU each row has a generator on the device and the noise never crosses the bus (drawing a
128K-vocabulary row per step on the CPU and copying it over cost more than the sampling itself);
the device's generator (Philox) draws other numbers than the CPU's, so cache keys of samples drawn
on a GPU say so (``sampler_params``).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

# Key part of generations sampled with device generators (absent on CPU: its keys are unchanged).
DEVICE_SAMPLER = {"sampler": "device-philox-1"}


def on_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def sampler_params(device: str, sampling: bool) -> dict[str, Any]:
    """What the cache key must add for samples drawn on ``device`` (nothing on CPU or without sampling)."""
    return dict(DEVICE_SAMPLER) if sampling and on_cuda(device) else {}


def make_sampler(seeds: Sequence[int], temperature: float, top_p: float, device: str,
                 on_device: bool | None = None):  # -> LogitsProcessor
    """A logits processor for greedy decoding that samples row i with ``seeds[i]``.

    ``on_device`` (default: whether ``device`` is CUDA) draws the noise with generators on the
    logits' device instead of the CPU.
    """
    import torch
    from transformers import LogitsProcessor

    draw_on_device = on_cuda(device) if on_device is None else on_device
    seeds = [int(s) % (2**63) for s in seeds]

    class GumbelNucleus(LogitsProcessor):
        def __init__(self) -> None:
            # CPU generators now; device generators on the first step (the logits tell the device).
            self.generators = None if draw_on_device else [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

        def _noise(self, logits: torch.Tensor) -> torch.Tensor:
            vocab = logits.shape[-1]
            if not draw_on_device:  # as always: CPU draws, copied to the logits' device
                return torch.stack([torch.rand(vocab, generator=g).clamp_(1e-10, 1 - 1e-10)
                                    for g in self.generators]).to(logits.device)
            if self.generators is None:
                self.generators = [torch.Generator(device=logits.device).manual_seed(s) for s in seeds]
            return torch.stack([torch.rand(vocab, generator=g, device=logits.device).clamp_(1e-10, 1 - 1e-10)
                                for g in self.generators])

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            logits = scores.float() / max(temperature, 1e-6)
            if top_p < 1.0:
                sorted_logits, order = logits.sort(dim=-1, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop_sorted = cum - sorted_logits.softmax(-1) > top_p  # keep the first token past top_p
                drop = drop_sorted.scatter(-1, order, drop_sorted)
                logits = logits.masked_fill(drop, float("-inf"))
            return logits - torch.log(-torch.log(self._noise(logits)))

    return GumbelNucleus()


def end_token_ids(*sources: Any) -> frozenset[int]:
    """Every end token of a model: ``generation_config.eos_token_id`` may be a list (Llama-3.1 has
    three: end_of_text, eom, eot), the tokenizer names one. Accepts ints, lists and None."""
    ids: set[int] = set()
    for source in sources:
        if source is None:
            continue
        ids.update(int(i) for i in ([source] if isinstance(source, int) else source))
    return frozenset(ids)


def model_end_tokens(model: Any, tokenizer: Any) -> frozenset[int]:
    """The end tokens ``model.generate`` stops at, and the tokenizer's own."""
    config = getattr(model, "generation_config", None)
    return end_token_ids(getattr(config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None))


def new_tokens(sequences: Any, prompt_len: int, eos_ids: int | Iterable[int] | None,
               pad_id: int | None) -> list[tuple[int, bool]]:
    """Per row: (generated tokens up to and including the first end token, whether an end token was reached)."""
    ends = end_token_ids(eos_ids)
    rows = []
    for row in sequences[:, prompt_len:].tolist():
        n, ended = 0, False
        for tok in row:
            if tok in ends:
                n, ended = n + 1, True
                break
            if tok == pad_id:
                break
            n += 1
        rows.append((n, ended))
    return rows


def count_new_tokens(sequences: Any, prompt_len: int, eos_ids: int | Iterable[int] | None,
                     pad_id: int | None) -> list[int]:
    """Generated tokens per row, up to and including the first end token (any of ``eos_ids``)."""
    return [n for n, _ in new_tokens(sequences, prompt_len, eos_ids, pad_id)]


def hit_token_limit(count: int, ended: bool, limit: int) -> bool:
    """Generation stopped because it reached ``limit`` new tokens, not at an end token."""
    return not ended and count >= limit


def drop_unfinished_line(text: str) -> str:
    """``text`` without its last line, which the token limit cut off mid-way (nothing if it had one line)."""
    head, sep, _ = text.rpartition("\n")
    return head.rstrip() if sep else ""


def cut_answer(text: str, truncated: bool, **fields: object):  # -> Generation
    """A generator's answer: when the token limit cut it, ``text`` without the unfinished line, ``raw`` whole."""
    from capstore.backends.base import Generation

    if not truncated:
        return Generation(text=text, **fields)  # type: ignore[arg-type]
    return Generation(text=drop_unfinished_line(text), raw=text, truncated=True, **fields)  # type: ignore[arg-type]
