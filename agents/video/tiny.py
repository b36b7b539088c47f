"""The ``tiny`` preset: a randomly initialised CogVideoX pipeline built from config.

Real architecture (CogVideoX transformer, CogVideoX 3D VAE, T5 encoder, DDIM
scheduler), real diffusers code path, no download: CPU tests and demos render
through exactly what a CogVideoX-2b render goes through, in well under a
second. Its weights are random, so its videos are coloured noise that depends
on the prompt and seed; everything that shows them says so (TINY_LABEL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import CogVideoXPipeline
    from transformers import PreTrainedTokenizerFast


TINY_NAME = "tiny"
TINY_MODEL_ID = "tiny-random-cogvideox"
TINY_LABEL = "tiny-random-cogvideox (random weights built from config: a pipeline test, not a video model)"
# What a tiny render defaults to: CogVideoX 1.0 wants 8k+1 frames and sizes divisible by 16 (VAE x8, patch 2).
TINY_DEFAULTS = {"num_frames": 9, "width": 64, "height": 64, "steps": 4, "fps": 8, "guidance_scale": 6.0}


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer with no vocabulary file: one token per UTF-8 byte, so any prompt encodes, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=64)


def build_tiny_cogvideox(seed: int = 0, max_text_tokens: int = 64) -> CogVideoXPipeline:
    import torch
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = byte_level_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64,
                                               num_layers=2, num_heads=4, relative_attention_num_buckets=8))
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=1, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=max_text_tokens)
        vae = AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
            layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(),
                             transformer=transformer.eval(), scheduler=CogVideoXDDIMScheduler())
