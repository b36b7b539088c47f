"""A frozen reference language model: how fluent a text is, measured by a model nobody trains.

Fluency is the mean log-probability per token of a text under the base model
without any adapter. The evaluation reports it and the promotion gate guards
it; no reward, pair rule or learner ever sees it, so a rewriter cannot be
optimised into pleasing it (a looping text the judge pays for scores lower
here, while prose the judge never saw is not penalised for being unfamiliar
to the judge).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from promptloop.agents.llm.device import pick_device, pick_dtype


class ReferenceLM:
    def __init__(self, path: str | Path, *, device: str = "auto", batch_size: int = 16):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=pick_dtype(self.device)).to(self.device)
        self.model.eval().requires_grad_(False)
        self.batch_size = batch_size

    @torch.inference_mode()
    def mean_logprob(self, texts: Sequence[str]) -> list[float | None]:
        """Mean log-probability (nats) of each text's tokens after the first; None for a text under 2 tokens."""
        out: list[float | None] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t or "" for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=512)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.model(**enc).logits[:, :-1].float()
            target, mask = enc["input_ids"][:, 1:], enc["attention_mask"][:, 1:].float()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            counts = mask.sum(dim=1)
            means = (logp * mask).sum(dim=1) / counts.clamp(min=1)
            out += [round(float(m), 4) if c > 0 else None for m, c in zip(means, counts, strict=True)]
        return out
