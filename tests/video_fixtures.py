"""Synthetic videos with known answers, a real landscape photo, and a tiny CLIP built from config."""

from __future__ import annotations

from pathlib import Path

import numpy as np

T, H, W = 16, 96, 128


def static_video() -> np.ndarray:
    import cv2

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((H, W, 3)) * 255).astype(np.uint8), (7, 7), 0)
    return np.stack([base] * T)


def square_video(xs: list[int] | None = None) -> np.ndarray:
    """A yellow square on grey moving 3 px per frame (or through the given x positions)."""
    xs = xs if xs is not None else [10 + 3 * t for t in range(T)]
    frames = []
    for x in xs:
        f = np.full((H, W, 3), 40, np.uint8)
        f[30:60, x:x + 24] = (220, 200, 60)
        frames.append(f)
    return np.stack(frames)


def jerky_video() -> np.ndarray:
    return square_video([10, 40, 12, 60, 15, 70, 20, 50, 10, 80, 30, 60, 5, 70, 20, 90])


def noise_video() -> np.ndarray:
    return (np.random.default_rng(1).random((T, H, W, 3)) * 255).astype(np.uint8)


def landscape_pan(frames: int = 12) -> np.ndarray:
    """A slow pan over scikit-learn's sample photo 'china.jpg' (a real landscape photograph)."""
    from sklearn.datasets import load_sample_image

    img = load_sample_image("china.jpg")  # (427, 640, 3)
    return np.stack([img[20 + 4 * t:20 + 4 * t + 224, 10 * t:10 * t + 320] for t in range(frames)])


def tiny_clip(path: Path) -> Path:
    """A randomly initialised CLIP with a byte-level tokenizer, saved like a hub checkpoint."""
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

    from promptloop.agents.video.tiny import byte_level_tokenizer

    backend = byte_level_tokenizer().backend_tokenizer
    backend.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    # CLIP pools the text at the first end-of-text token, so the start token must be a different one.
    tok = CLIPTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                            bos_token="<unk>", model_max_length=32)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=32, eos_token_id=1,
                                      pad_token_id=0, bos_token_id=1),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                     crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(path)
    return path


def tiny_wan(path: Path) -> Path:
    """A randomly initialised Wan2.1 pipeline saved like a hub checkpoint (UMT5 encoder, Wan VAE, flow matching)."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    from promptloop.agents.video.tiny import byte_level_tokenizer

    tok = byte_level_tokenizer()
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=2, rope_max_seq_len=32)
    WanPipeline(tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0)).save_pretrained(path)
    return path


def tiny_llava(path: Path, tokenizer_from: Path) -> Path:
    """A randomly initialised LLaVA (CLIP vision tower + Llama decoder) with SmolLM2's tokenizer, saved like a
    hub checkpoint: the smallest real image-text-to-text model transformers and TRL handle end to end."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tok, chat_template=template, patch_size=8, image_token="<image>",
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                     num_attention_heads=4, image_size=32, patch_size=8),
                      text_config=LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                      image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    processor.save_pretrained(path)
    return path
