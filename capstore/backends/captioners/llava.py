"""LLaVA captioner (transformers LlavaForConditionalGeneration + its chat template).

Default weights: llava-hf/llava-1.5-7b-hf. ``adapter=DIR`` loads a PEFT adapter on top, for
personalised or fine-tuned variants; the adapter's weights become part of the model's identity.
"""

from __future__ import annotations

from typing import Any

from capstore.backends.captioners.hf_vision import HFVisionCaptioner
from capstore.backends.registry import BackendSpec, register
from capstore.store.engine import Store

DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"


class LlavaCaptioner(HFVisionCaptioner):
    backend = "llava"
    impl = "llava-captioner-1"
    default_prompt = "Describe this image in one short sentence."

    def model_class(self):  # type: ignore[no-untyped-def]
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def build_prompt(self) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)


@register("captioner", "llava")
def build(spec: BackendSpec, store: Store, **options: Any) -> LlavaCaptioner:
    return LlavaCaptioner(spec, store, **options)
