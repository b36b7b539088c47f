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


def _kept(scores: torch.Tensor) -> list[set[int]]:
    return [set(torch.isfinite(row).nonzero().squeeze(-1).tolist()) for row in scores]


def test_top_k_and_min_p_draw_only_what_transformers_warpers_keep():
    """Both controls keep exactly the tokens of transformers' TopKLogitsWarper / MinPLogitsWarper."""
    from transformers import MinPLogitsWarper, TopKLogitsWarper

    torch.manual_seed(3)
    logits = torch.randn(2, 30) * torch.tensor([[3.0], [0.5]])
    scaled = TemperatureLogitsWarper(0.7)(None, logits.clone())
    gen = torch.Generator().manual_seed(4)
    for kwargs, scores in (({"top_k": 5}, TopKLogitsWarper(5)(None, scaled.clone())),
                           ({"min_p": 0.2}, MinPLogitsWarper(0.2)(None, scaled.clone()))):
        seen: list[set[int]] = [set(), set()]
        for _ in range(1500):
            for row, t in enumerate(next_tokens(logits, temperature=0.7, top_p=1.0, generator=gen, **kwargs)):
                seen[row].add(int(t))
        assert seen == _kept(scores), kwargs
    assert all(len(s) == 5 for s in _kept(TopKLogitsWarper(5)(None, scaled.clone())))


def test_penalties_are_transformers_processors_and_off_by_default():
    from promptloop.agents.llm.sampling import penalties
    from promptloop.config import SamplingControls

    assert penalties(SamplingControls()) is None
    procs = penalties(SamplingControls(repetition_penalty=2.0, no_repeat_ngram_size=2))
    history = torch.tensor([[5, 6, 5]])  # generated so far: 5 6 5 -> the bigram (5, 6) may not come again
    logits = torch.zeros(1, 8)
    logits[0, 5], logits[0, 6] = 4.0, 4.0
    out = procs(history, logits.clone())
    assert out[0, 6] == float("-inf")  # banned: would repeat the bigram 5 6
    assert out[0, 5] == 2.0  # penalised: generated before, logit divided by the penalty
    assert out[0, 7] == 0.0  # untouched


def test_cut_at_stop_keeps_the_text_before_the_first_stop_string():
    from promptloop.agents.llm.base import cut_at_stop

    assert cut_at_stop("a cat. Then a dog. END more", ["END", "."]) == "a cat"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"
