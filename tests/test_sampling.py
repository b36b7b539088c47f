"""Nucleus sampling keeps the same tokens as transformers' TopPLogitsWarper, on the probe and the full-sort path."""

import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from promptloop.agents.llm.sampling import next_tokens


def _warper_kept(logits: torch.Tensor, temperature: float, top_p: float) -> list[set[int]]:
    scores = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
    return [set(torch.isfinite(row).nonzero().squeeze(-1).tolist()) for row in scores]


def test_draws_stay_in_the_warpers_nucleus_and_cover_it():
    torch.manual_seed(0)
    logits = torch.randn(3, 40) * torch.tensor([[4.0], [1.0], [0.2]])  # peaked, medium, nearly flat rows
    kept = _warper_kept(logits, 0.8, 0.9)
    gen = torch.Generator().manual_seed(1)
    for probe in (256, 4):  # probe wider than the vocabulary; probe too narrow -> full sort for some rows
        seen: list[set[int]] = [set(), set(), set()]
        for _ in range(1500):
            for row, token in enumerate(next_tokens(logits, temperature=0.8, top_p=0.9, generator=gen, probe=probe)):
                seen[row].add(int(token))
        assert seen == kept, probe
    assert len(kept[0]) < len(kept[2])  # the peaked row's nucleus is the narrower one


def test_greedy_seeded_and_untruncated_draws():
    logits = torch.tensor([[0.1, 3.0, -1.0], [2.0, 0.0, 1.9]])
    assert next_tokens(logits, temperature=0.0, top_p=0.9).tolist() == [1, 0]
    a = [next_tokens(logits, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(5)).tolist()
         for _ in range(2)]
    assert a[0] == a[1]  # same generator seed, same draw
    gen = torch.Generator().manual_seed(2)
    full = {int(t) for _ in range(400) for t in next_tokens(logits[:1], temperature=1.0, top_p=1.0, generator=gen)}
    assert full == {0, 1, 2}  # top_p 1 keeps the whole vocabulary
