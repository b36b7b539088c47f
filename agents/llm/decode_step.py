"""A one-token decode step for int8 copies of Llama-architecture models, without the transformers forward.

At batch 4 on 2 CPU cores a decode step of the 135M rewriter's int8 copy
spent about a third of its time outside the matmuls and attention: 211
module calls, each casting its input to bf16 and back, six ops per RMSNorm,
a mask built per step, and the forward's keyword plumbing. This step runs
the same arithmetic as ``LlamaForCausalLM`` on the copy's own tensors with
q/k/v and gate/up as one int8 matmul each (their weights are views into one
buffer, so the copy holds no extra bytes), ``F.rms_norm``, and a mask only
when a row is padded. Residual stream, norms and attention stay fp32, as in
the copy's transformers forward, and each op is the one the forward runs on
the same shapes, so the logits are the forward's bit for bit (tested; a
different attention layout alone moved padded rows by a bf16 rounding step
and changed sampled text). Prefill and every other model keep the
transformers forward; ``bench/generation.py`` measures both on one run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from promptloop.agents.llm.quantize import Int8Linear

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""(tokens (B,), attention mask (B, cached + 1), positions (B,), cache) -> next-token logits (B, vocab), fp32."""


def _fused(mods: list[Int8Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    """One int8 weight and scale for ``mods`` in order; each module's own buffers become views into it."""
    weight = torch.cat([m.weight_int8 for m in mods]).contiguous()
    scale = torch.cat([m.scale for m in mods]).contiguous()
    start = 0
    for m in mods:
        rows = m.weight_int8.shape[0]
        m.weight_int8, m.scale = weight[start:start + rows], scale[start:start + rows]
        start += rows
    return weight, scale


def supports(model: torch.nn.Module) -> bool:
    """A Llama-architecture causal LM whose every linear is an ``Int8Linear`` without bias (what the step
    reproduces); anything else keeps the transformers forward."""
    cfg = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if (cfg is None or inner is None or getattr(cfg, "model_type", None) != "llama"
            or getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "pretraining_tp", 1) not in (None, 1)
            or not hasattr(inner, "rotary_emb") or not isinstance(getattr(model, "lm_head", None), Int8Linear)):
        return False
    for layer in inner.layers:
        a, m = layer.self_attn, layer.mlp
        linears = [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
        if not all(isinstance(x, Int8Linear) and x.bias is None for x in linears):
            return False
    return model.lm_head.bias is None


class LlamaInt8Step:
    def __init__(self, model: torch.nn.Module):
        cfg, inner = model.config, model.model
        self.embed, self.rotary, self.norm = inner.embed_tokens, inner.rotary_emb, inner.norm
        self.head = model.lm_head
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.layers = []
        for i, layer in enumerate(inner.layers):
            a, m = layer.self_attn, layer.mlp
            self.layers.append((i, layer.input_layernorm, _fused([a.q_proj, a.k_proj, a.v_proj]), a.o_proj,
                                layer.post_attention_layernorm, _fused([m.gate_proj, m.up_proj]), m.down_proj,
                                a.head_dim, a.scaling))

    @staticmethod
    def _rms(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)

    @staticmethod
    def _mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x.to(torch.bfloat16), weight, scale)

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        rows = tokens.shape[0]
        h = self.embed(tokens)
        cos, sin = self.rotary(h[:, None], positions[:, None])  # rows x 1 x head_dim
        attend = None if bool(mask.all()) else mask[:, None, None, :].bool()
        hq, hk = self.heads, self.kv_heads
        for i, norm1, qkv, o_proj, norm2, gate_up, down, d, scaling in self.layers:
            x = self._mm(self._rms(h, norm1), *qkv).float()
            q, k = apply_rotary_pos_emb(x[:, :hq * d].view(rows, hq, 1, d),
                                        x[:, hq * d:(hq + hk) * d].view(rows, hk, 1, d), cos, sin)
            v = x[:, (hq + hk) * d:].reshape(rows, hk, 1, d)
            k, v = cache.update(k, v, i)
            # grouped-query attention the way transformers' sdpa_attention_forward runs one token on CPU, so the
            # same kernel rounds the same way: sdpa's own GQA without a mask, else each kv head's query heads
            # packed as its query positions
            if attend is None:
                att = F.scaled_dot_product_attention(q, k, v, scale=scaling, enable_gqa=hq != hk)
            else:
                att = F.scaled_dot_product_attention(q.reshape(rows, hk, hq // hk, d), k, v, attn_mask=attend,
                                                     scale=scaling)
            h = h + self._mm(att.reshape(rows, hq * d), o_proj.weight_int8, o_proj.scale).float()
            gu = self._mm(self._rms(h, norm2), *gate_up).float()
            half = gu.shape[-1] // 2
            h = h + self._mm(F.silu(gu[:, :half]) * gu[:, half:], down.weight_int8, down.scale).float()
        return self._mm(self._rms(h, self.norm), self.head.weight_int8, self.head.scale).float()


def decode_step(model: torch.nn.Module, cache_kw: str, *, fused: bool = True) -> Step:
    """The step for ``model``: the fused int8 step where ``supports`` it (checked and built once per model),
    else the transformers forward."""
    step = getattr(model, "_promptloop_step", None) if fused else None
    if step is None and fused and supports(model):
        step = model._promptloop_step = LlamaInt8Step(model)
    if step is not None:
        return step

    def forward(tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        return model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                     **{cache_kw: cache}, use_cache=True, logits_to_keep=1).logits[:, -1]

    return forward
