"""Named decoding presets of the transformers captioners (BLIP-2, LLaVA): ``--decoding NAME``.

A preset is stored in the run config and its name is part of every caption's cache key, so each
published way of decoding can be reproduced and never mixes with another in the caches:

- ``greedy`` (the default with one caption per image): transformers' zero-shot captioning, as the
  cost study ran BLIP-2 — greedy search, no prompt, at most 30 new tokens.
- ``lavis-coco``: LAVIS's COCO caption evaluation of BLIP-2 (``caption_coco_flant5xl_eval.yaml``:
  ``num_beams: 5``, ``max_len: 30``, ``min_len: 8``; ``Blip2T5.generate`` passes them to T5 as
  ``max_new_tokens=30, min_length=8``, where the decoder's start token counts, so a caption has at
  least 7 tokens before its end token). A decoder-only language model (OPT, LLaVA's Llama) counts
  its prompt in ``min_length``, so there it is ``min_new_tokens=8``.
- ``sample`` (the default with ``--num-candidates`` > 1): nucleus sampling (temperature 1.0 and
  top-p 0.9 unless given), seeded per image and candidate.

Every preset passes all of its settings to ``generate``, so a model's own ``generation_config``
(beams, penalties) never changes a preset behind its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capstore.errors import InputError


@dataclass(frozen=True)
class Decoding:
    name: str
    num_beams: int = 1
    do_sample: bool = False
    max_new_tokens: int = 30
    min_length: int | None = None  # LAVIS's min_len, in transformers' min_length sense for T5
    summary: str = ""


DECODINGS: dict[str, Decoding] = {d.name: d for d in (
    Decoding("greedy", summary="transformers zero-shot: greedy, at most 30 new tokens (the cost study's BLIP-2)"),
    Decoding("lavis-coco", num_beams=5, min_length=8,
             summary="LAVIS's COCO caption evaluation: 5 beams, at most 30 new tokens, min_len 8"),
    Decoding("sample", do_sample=True, summary="nucleus sampling seeded per image and candidate"),
)}


def check_decoding(name: str | None) -> None:
    """A known preset name (None: the default); anything else is a one-line InputError."""
    if name is not None and name not in DECODINGS:
        raise InputError(f"--decoding {name!r}: expected one of {', '.join(DECODINGS)}")


def resolve_decoding(name: str | None, num_candidates: int = 1, do_sample: bool = False) -> Decoding:
    """The preset a captioner uses: the one named, else ``sample`` for several candidates, else ``greedy``."""
    check_decoding(name)
    if name is None:
        name = "sample" if num_candidates > 1 or do_sample else "greedy"
    decoding = DECODINGS[name]
    if num_candidates > 1 and not decoding.do_sample:
        raise InputError(f"--decoding {name} gives one caption per image; --num-candidates {num_candidates} "
                         "needs --decoding sample")
    return decoding


def generate_kwargs(decoding: Decoding, max_new_tokens: int, encoder_decoder: bool) -> dict[str, Any]:
    """The keyword arguments of ``model.generate`` for ``decoding`` (sampling itself is the seeded
    logits processor: transformers' own ``do_sample`` stays off)."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": decoding.num_beams,
                              "repetition_penalty": 1.0}
    if decoding.num_beams > 1:
        kwargs["length_penalty"] = 1.0
    if decoding.min_length is not None:
        kwargs["min_length" if encoder_decoder else "min_new_tokens"] = decoding.min_length
    return kwargs
