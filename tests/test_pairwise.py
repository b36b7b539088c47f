"""The pairwise judge's bookkeeping on scripted judges; the real-server run is in test_openai_backend.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from promptloop.agents.llm.base import ChatModel, Conversation, SamplingParams
from promptloop.evaluation.pairwise import compare, outcome, parse_verdict


class Scripted(ChatModel):
    """Answers each judge conversation with ``answer(rewrite_a, rewrite_b)``; records what it was asked."""

    name = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams, *,
                 adapter: str | None = None) -> list[list[str]]:
        out = []
        for c in conversations:
            text = c[-1]["content"]
            a = text.split("Rewrite A: ", 1)[1].split("\n\nRewrite B: ", 1)[0]
            b = text.split("Rewrite B: ", 1)[1].split("\n\nThe better rewrite", 1)[0]
            self.asked.append((a, b))
            out.append([self.answer(a, b)])
        return out


PROMPTS = ["a fox", "a tram", "rain", "a chef"]
CAND = ["a red fox in snow at dawn, wide shot", "a tram climbing a hill", "rain on glass, macro", "x"]
CHAMP = ["a fox", "a tram", "rain falling on a window at night, close-up, neon reflections", "a chef tossing dough"]


def test_verdicts_parse_and_combine_across_orders():
    assert [parse_verdict(t) for t in ("A", " b.", "**TIE**", "Answer: B", "neither", "")] == \
        ["A", "B", "T", "B", None, None]
    assert outcome("A", "B") == "win" and outcome("B", "A") == "loss"
    assert outcome("A", "A") == "tie"  # the same position twice: inconsistent, so a tie
    assert outcome("T", "T") == "tie" and outcome("A", None) is None


def test_a_fair_judge_is_counted_per_prompt_with_both_orders_asked():
    judge = Scripted(lambda a, b: "A" if len(a) > len(b) else "B" if len(b) > len(a) else "TIE")
    r = compare(judge, PROMPTS, CAND, CHAMP)
    assert len(judge.asked) == 8 and judge.asked[0] == (CAND[0], CHAMP[0]) and judge.asked[1] == (CHAMP[0], CAND[0])
    assert (r.wins, r.ties, r.losses, r.invalid) == (2, 0, 2, 0)  # longer wins: prompts 0, 1 vs 2, 3
    assert r.win_rate == 0.5 and r.first_position_rate == 0.5 and r.consistency == 1.0


def test_a_position_biased_judge_shows_its_bias_and_decides_nothing():
    r = compare(Scripted(lambda a, b: "A"), PROMPTS, CAND, CHAMP)
    assert (r.wins, r.ties, r.losses) == (0, 4, 0) and r.first_position_rate == 1.0 and r.consistency == 0.0
    r = compare(Scripted(lambda a, b: "I cannot say"), PROMPTS, CAND, CHAMP)
    assert r.invalid == 4 and r.win_rate is None and r.first_position_rate is None
    with pytest.raises(ValueError, match="same length"):
        compare(Scripted(lambda a, b: "A"), PROMPTS, CAND[:2], CHAMP)
