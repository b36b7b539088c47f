"""Next-token choice for the in-process decode loop: greedy, or temperature + nucleus (top-p) sampling.

transformers' top-p warper sorts the whole vocabulary of every row and then
draws from it; for SmolLM2 (49k tokens) at 128 rows that sort and the
full-vocabulary draw were a third of a collection's generate time on the
2-core CPU (profiled: ``sort`` 22 %, ``exponential_`` 13 %). The nucleus of
a trained model is small, so it is found among the top ``probe`` tokens and
the full sort runs only for the rare rows whose top ``probe`` tokens hold less
than ``top_p`` of the mass. Which tokens are kept is the same rule as the
warper's: the fewest most-likely tokens whose mass reaches ``top_p``.

The other controls are transformers' own logits processors, applied in
``generate``'s order (penalties, then temperature, top-k, top-p, min-p), to
the tokens generated so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import LogitsProcessorList

    from promptloop.config import SamplingControls


def penalties(controls: SamplingControls) -> LogitsProcessorList | None:
    """transformers' repetition penalty and n-gram ban for these controls; None when both are off."""
    from transformers import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
    )

    out = LogitsProcessorList()
    if controls.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(controls.repetition_penalty))
    if controls.no_repeat_ngram_size:
        out.append(NoRepeatNGramLogitsProcessor(controls.no_repeat_ngram_size))
    return out or None


def next_tokens(logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int = 0, min_p: float = 0.0,
                generator: torch.Generator | None = None, probe: int = 256) -> torch.Tensor:
    """One token id per row of ``logits`` (rows x vocab); ``temperature`` 0 means argmax."""
    if temperature == 0.0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if top_k:
        from transformers import TopKLogitsWarper

        scaled = TopKLogitsWarper(top_k)(None, scaled)
    probs = torch.softmax(scaled, dim=-1)
    if min_p:  # min-p after top-p, in generate's order; the draw then takes the kept mass as it is
        probs = _min_p(probs, top_p, min_p)
        top_p = 1.0
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    top, ids = probs.topk(min(probe, probs.shape[-1]), dim=-1)
    short = top.sum(-1) < top_p  # nucleus wider than the probe: sort the whole row
    if short.any():
        return _draw_rows(probs, top, ids, short, top_p, generator)
    return _draw_nucleus(top, ids, top_p, generator)


def _draw_nucleus(top: torch.Tensor, ids: torch.Tensor, top_p: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Draw from descending-sorted ``top`` probabilities, keeping tokens whose preceding mass is below top_p."""
    before = top.cumsum(-1) - top
    kept = torch.where(before < top_p, top, torch.zeros_like(top))
    pick = torch.multinomial(kept, 1, generator=generator)
    return ids.gather(-1, pick).squeeze(-1)


def _draw_rows(probs: torch.Tensor, top: torch.Tensor, ids: torch.Tensor, short: torch.Tensor, top_p: float,
               generator: torch.Generator | None) -> torch.Tensor:
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    if (~short).any():
        out[~short] = _draw_nucleus(top[~short], ids[~short], top_p, generator)
    full, full_ids = probs[short].sort(dim=-1, descending=True)
    out[short] = _draw_nucleus(full, full_ids, top_p, generator)
    return out


def _min_p(probs: torch.Tensor, top_p: float, min_p: float) -> torch.Tensor:
    """Nucleus first, then drop tokens under ``min_p`` x the row's top probability (transformers' order)."""
    if top_p < 1.0:
        full, ids = probs.sort(dim=-1, descending=True)
        before = full.cumsum(-1) - full
        full = torch.where(before < top_p, full, torch.zeros_like(full))
        probs = torch.zeros_like(probs).scatter(-1, ids, full)
    floor = probs.max(-1, keepdim=True).values * min_p
    return torch.where(probs >= floor, probs, torch.zeros_like(probs))
