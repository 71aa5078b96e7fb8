"""Tiny offline models of the real architectures, with random weights, for tests and the demo:
open_clip CLIP, Llama, BLIP-2 and LLaVA, and the video and audio scorers X-CLIP and CLAP.

Nothing here downloads: the CLIP tokenizer ships inside open_clip, the LLM tokenizer is a
byte-level BPE trained in code. Each model is saved so that the normal loading code loads it:
``open_clip.create_model_and_transforms("local-dir:…")`` and ``Auto*/…from_pretrained(dir)``.
Outputs are gibberish; the models exist to exercise loading, batching, caching and accounting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}"
)
_CORPUS = [
    "a red circle in a clear blue sky", "two green squares on a green meadow", "three yellow triangles above the sea",
    "a photo of a dog playing with a ball in the park", "a man riding a motorcycle on a street",
    "1. a small boat on the water\n2. a cat sleeping on a sofa\n3. a plate of food on a table",
    "You need to provide a short image description. Higher score means a better description.",
]


@dataclass(frozen=True)
class TinyModels:
    """Folders of the tiny models, and the backend specs that load them."""

    root: Path

    @property
    def clip(self) -> Path:
        return self.root / "clip"

    @property
    def llm(self) -> Path:
        return self.root / "llm"

    @property
    def blip2(self) -> Path:
        return self.root / "blip2"

    @property
    def llava(self) -> Path:
        return self.root / "llava"

    @property
    def xclip(self) -> Path:
        return self.root / "xclip"

    @property
    def clap(self) -> Path:
        return self.root / "clap"

    @property
    def specs(self) -> dict[str, str]:
        return {
            "scorer": f"open_clip:{self.clip}",
            "generator": f"hf:{self.llm}",
            "blip2": f"blip2:{self.blip2}",
            "llava": f"llava:{self.llava}",
            "video_scorer": f"xclip:{self.xclip}",
            "frames_scorer": f"open_clip-frames:{self.clip}",
            "audio_scorer": f"clap:{self.clap}",
        }


def build_tokenizer(out_dir: Path):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained in code (milliseconds), with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
    )  # "<image>" is in the vocabulary; the BLIP-2/LLaVA processors find it by that default name
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.save_pretrained(out_dir)
    return fast


def build_clip(out_dir: Path, seed: int) -> None:
    """A 64-wide, 2-layer open_clip CLIP saved as ``open_clip_config.json`` + safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    config = json.loads(resources.files("capstore.backends").joinpath("configs/capstore-tiny-clip.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**config["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "open_clip_model.safetensors"))


def build_llm(out_dir: Path, seed: int) -> None:
    """A 2-layer Llama (head_dim 64) with the trained tokenizer and a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(out_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=1, num_key_value_heads=1, head_dim=64, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)


def build_blip2(out_dir: Path, seed: int) -> None:
    """A BLIP-2 (ViT + Q-Former + OPT) with a tiny processor."""
    import torch
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, OPTConfig)

    tok = build_tokenizer(out_dir)
    n_query = 4
    cfg = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=16).to_dict(),
        qformer_config=Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, encoder_hidden_size=32, vocab_size=len(tok)).to_dict(),
        text_config=OPTConfig(vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                              num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=512,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id).to_dict(),
        num_query_tokens=n_query,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=n_query).save_pretrained(out_dir)


def build_llava(out_dir: Path, seed: int) -> None:
    """A LLaVA (CLIP vision tower + projector + Llama) with its processor and chat template."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = build_tokenizer(out_dir)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=16, projection_dim=32).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                num_attention_heads=1, num_key_value_heads=1, head_dim=64,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id).to_dict(),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=16,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   chat_template=CHAT_TEMPLATE).save_pretrained(out_dir)


def _text_tokenizer(out_dir: Path, max_length: int):  # -> PreTrainedTokenizerFast
    """The trained tokenizer, padding on the right as CLIP's and RoBERTa's do (a text's embedding must
    not depend on the longest text of its batch), cut at ``max_length`` tokens."""
    tok = build_tokenizer(out_dir)
    tok.padding_side = "right"
    tok.model_max_length = max_length
    tok.save_pretrained(out_dir)
    return tok


def build_xclip(out_dir: Path, seed: int) -> None:
    """An X-CLIP (ViT frames + multi-frame integration transformer + text encoder) over 4 frames of
    32x32, with its VideoMAE image processor."""
    import torch
    from transformers import VideoMAEImageProcessor, XCLIPConfig, XCLIPModel, XCLIPTextConfig, XCLIPVisionConfig

    tok = _text_tokenizer(out_dir, 32)
    cfg = XCLIPConfig(
        text_config=XCLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id).to_dict(),
        vision_config=XCLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                        image_size=32, patch_size=16, num_frames=4, mit_hidden_size=32,
                                        mit_intermediate_size=64, mit_num_hidden_layers=1,
                                        mit_num_attention_heads=2).to_dict(),
        projection_dim=32, prompt_layers=1, prompt_attention_heads=2,
    )
    torch.manual_seed(seed)
    XCLIPModel(cfg).save_pretrained(out_dir)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out_dir)


def build_clap(out_dir: Path, seed: int) -> None:
    """A CLAP (HTSAT audio encoder + RoBERTa text encoder) on 2 s of 16 kHz audio, 64 mel bins, with its
    feature extractor (``rand_trunc``: one crop of a longer clip, as the unfused CLAP models)."""
    import torch
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    tok = _text_tokenizer(out_dir, 32)
    cfg = ClapConfig(
        text_config=ClapTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, max_position_embeddings=40, pad_token_id=tok.pad_token_id,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id).to_dict(),
        audio_config=ClapAudioConfig(window_size=8, num_mel_bins=64, spec_size=256, patch_size=4, patch_stride=(4, 4),
                                     hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2],
                                     patch_embeds_hidden_size=8, enable_fusion=False, num_hidden_layers=2).to_dict(),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    ClapModel(cfg).save_pretrained(out_dir)
    ClapFeatureExtractor(feature_size=64, sampling_rate=16000, hop_length=160, max_length_s=2, fft_window_size=400,
                         frequency_min=50, frequency_max=8000, truncation="rand_trunc").save_pretrained(out_dir)


def build_tiny_models(out_dir: str | Path, seed: int = 0) -> TinyModels:
    """Build (or reuse, if already complete) the tiny models under ``out_dir``: CLIP, Llama, BLIP-2, LLaVA,
    and the video and audio scorers X-CLIP and CLAP."""
    models = TinyModels(Path(out_dir).resolve())
    for path, build in ((models.clip, build_clip), (models.llm, build_llm),
                        (models.blip2, build_blip2), (models.llava, build_llava),
                        (models.xclip, build_xclip), (models.clap, build_clap)):
        done = path / ".complete"
        if done.exists() and done.read_text() == str(seed):
            continue
        path.mkdir(parents=True, exist_ok=True)
        build(path, seed)
        done.write_text(str(seed))  # written last: a half-built folder is rebuilt
    return models
