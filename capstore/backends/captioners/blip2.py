"""BLIP-2 captioner (transformers Blip2ForConditionalGeneration). Default weights: Salesforce/blip2-flan-t5-xl."""

from __future__ import annotations

from typing import Any

from capstore.backends.captioners.hf_vision import HFVisionCaptioner
from capstore.backends.registry import BackendSpec, register
from capstore.store.engine import Store

DEFAULT_MODEL = "Salesforce/blip2-flan-t5-xl"


class Blip2Captioner(HFVisionCaptioner):
    backend = "blip2"
    impl = "blip2-captioner-1"
    default_prompt = ""  # BLIP-2 captions with an empty prompt, as in LAVIS's COCO evaluation

    def model_class(self):  # type: ignore[no-untyped-def]
        from transformers import Blip2ForConditionalGeneration

        return Blip2ForConditionalGeneration

    def build_prompt(self) -> str:
        return self.prompt


@register("captioner", "blip2")
def build(spec: BackendSpec, store: Store, **options: Any) -> Blip2Captioner:
    return Blip2Captioner(spec, store, **options)
