"""Weight-only int8 copies of a causal LM for CPU decoding.

A decode step of the 135M rewriter reads all its fp32 weights to produce a
few tokens, so on CPU it is bound by memory traffic: ~97 ms a step at batch 4
here, most of it in ``aten::mm`` (the 49k-row output layer alone ~18 ms).
Measured on this 2-core AVX512 CPU, batch 4 (bench/int8_quality.py for
quality, on train-split prompts):

- weight-only int8 (per-output-channel scales, bf16 activations into
  ``torch._weight_int8pack_mm``, the kernel torchao and gpt-fast use on CPU):
  32 ms a step, per-token KL to fp32 0.006, top token agreeing 95%;
  faster than fp32 at every batch size tried (1 to 64);
- dynamic int8 (``torch.ao`` ``quantize_dynamic``, activations quantised
  too): 30 ms, but KL 1.1 to 1.4 and 40-50% agreement: the model's
  activation outliers do not survive per-tensor int8 (SmoothQuant-style
  scaling only brought KL to 0.07);
- the same int8 kernel with fp32 activations: slower than fp32.

LoRA adapters are merged into a copy of the base before it is quantised,
one copy per rewriter version, so the int8 path serves the weights a
version was trained to. Norms and attention stay fp32, and the input
embeddings are the source model's own tensor, shared rather than copied: a
copy holds 129 MB of tensors for the 135M model, against 237 MB with its own
embeddings.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch

Quantize = Literal["auto", "none", "int8"]


def int8_supported() -> bool:
    """Whether this torch build has the weight-only int8 CPU kernel (a private op: checked, not assumed)."""
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return False
    try:
        w = torch.ones(8, 8, dtype=torch.int8)
        torch._weight_int8pack_mm(torch.ones(1, 8, dtype=torch.bfloat16), w, torch.ones(8, dtype=torch.bfloat16))
    except (RuntimeError, NotImplementedError):
        return False
    return True


def resolve(requested: Quantize, device: str, dtype: torch.dtype) -> Literal["none", "int8"]:
    """``auto``: int8 for fp32 decoding on an AVX512 CPU (where it was measured faster), else none; an explicit
    int8 only needs the kernel."""
    if requested == "none":
        return "none"
    usable = device == "cpu" and dtype == torch.float32 and int8_supported()
    if requested == "int8" and not usable:
        raise ValueError(f"quantize=int8 needs fp32 decoding on a CPU whose torch has _weight_int8pack_mm (device "
                         f"{device}, dtype {str(dtype).removeprefix('torch.')}); set quantize to none or auto")
    if requested == "auto" and not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return "none"
    return "int8" if usable else "none"


class Int8Linear(torch.nn.Module):
    """``nn.Linear`` with int8 weights and one scale per output row; activations go in as bf16."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        y = torch._weight_int8pack_mm(flat, self.weight_int8, self.scale).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def _swap_linears(module: torch.nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _swap_linears(child)


@torch.no_grad()
def int8_copy(model: torch.nn.Module, adapter: str | None = None) -> torch.nn.Module:
    """A weight-only int8 copy of ``model``; with PEFT adapters, ``adapter`` merged in (None: none).

    The copy is taken before merging, so the caller's model keeps its adapters
    and full-precision weights (training and new adapters still attach to it).
    """
    # the input embeddings are read, never merged into or quantised: the copy shares them with the source
    # (113 MB for the 135M model's 49k x 576 table, per copy)
    embeddings = model.get_input_embeddings().weight
    work = copy.deepcopy(model, memo={id(embeddings): embeddings})
    if hasattr(work, "peft_config"):
        if adapter is None:
            work = work.unload()
        else:
            work.set_adapter(adapter)
            for other in [a for a in work.peft_config if a != adapter]:
                work.delete_adapter(other)
            work = work.merge_and_unload()
    _swap_linears(work)  # the output layer too: tied to the embeddings, it gets its own int8 copy
    return work.eval()
