"""The demo models' tokenizer: a byte-level BPE trained in code on the demo world's language.

Trained on every reference the world can have, every line in the pool's grammar, the MILS prompt
and numbered answer lines, with enough merges that each word of the world is one token: sequences
stay short, so training and generation are fast on a CPU. Any other text still tokenizes (byte
fallback). The CLIP's copy lower-cases its input and ends every text with ``</s>`` (its pooled token).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from capstore.backends.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS
from capstore.datasets.demo import COLOURS, NUMBERS, SCENES, SHAPES, Scene
from capstore.methods.demo_assets import DEMO_PROMPT, PLACES, THINGS, Phrase
from capstore.methods.demo_assets import COLOURS as POOL_COLOURS

VOCAB_SIZE = 768


def world_corpus() -> list[str]:
    """Texts that use every word and phrase of the demo's world, in the shapes the models see."""
    refs = [r for sh, c, n, sc in product(SHAPES, COLOURS, NUMBERS, SCENES) for r in Scene(sh, c, n, sc).references()]
    phrases = [Phrase(n, c, t, p).text() for n, c, t, p in product((1, 2, 3), POOL_COLOURS, THINGS, PLACES)]
    answer = "".join(f"{k}. {text}\n" for k, text in enumerate(phrases[:40], 1))
    scores = "".join(f"0.{k:03d}: {text}\n" for k, text in zip(range(0, 1000, 7), phrases))
    chat = [f"user: {DEMO_PROMPT} assistant: Describe this image in one short sentence."]
    return refs + phrases + [answer, scores] * 4 + chat * 20


def build_world_tokenizer(out_dir: Path, *, for_clip: bool = False):  # -> PreTrainedTokenizerFast
    """Train the tokenizer (milliseconds, deterministic) and save it in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(world_corpus(), trainer=trainer)
    if for_clip:  # CLIP reads lower case and pools the features of the final </s>
        tok.normalizer = normalizers.Lowercase()
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.save_pretrained(out_dir)
    return fast
