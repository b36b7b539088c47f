"""A pairwise LLM judge: the candidate's rewrite against the champion's, on the same prompts, both orders.

The heuristic judge trains the rewriter, so it cannot also be the referee; a
capable model behind any OpenAI-compatible server (``eval.judge``) can. Each
prompt is asked twice, with the candidate as A and as B, because LLM judges
favour a position (MT-Bench, Zheng et al. 2023): a prompt counts as a win or a
loss only when both orders agree, otherwise as a tie (MT-Bench's conservative
rule); an answer that names neither side is invalid and the prompt is left out.
The share of decisive answers that picked the first position is reported as
the judge's position bias (0.5 = none).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from promptloop.agents.llm.base import ChatModel, SamplingParams
from promptloop.config import SamplingControls

PAIRWISE_PROMPT = """You judge two rewrites of a user's short idea for a text-to-video model.

User idea: {prompt}

Rewrite A: {a}

Rewrite B: {b}

The better rewrite keeps everything the user asked for (subjects, actions, counts), adds concrete visual \
detail a video model can render (setting, lighting, camera, style), stays harmless, and does not repeat \
itself or talk about the task. Answer with one word: A, B, or TIE."""

_VERDICT = re.compile(r"\b(TIE|A|B)\b")


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'T' from the judge's answer (its first verdict word); None when it names none."""
    m = _VERDICT.search(text.strip().upper().replace("*", ""))
    if m is None:
        return None
    return "T" if m.group(1) == "TIE" else m.group(1)


@dataclass
class PairwiseResult:
    n: int  # prompts compared
    wins: int
    ties: int
    losses: int
    invalid: int  # prompts where an order's answer named neither side
    win_rate: float | None  # (wins + ties / 2) / valid prompts
    first_position_rate: float | None  # share of decisive answers that picked position A (0.5 = no bias)
    consistency: float | None  # share of valid prompts whose two orders agree
    judge: str

    def to_dict(self) -> dict:
        return asdict(self)


AS_A = {"A": "win", "B": "loss", "T": "tie"}  # the candidate's result when it was shown as A
AS_B = {"B": "win", "A": "loss", "T": "tie"}  # ... and when it was shown as B


def outcome(first: str | None, second: str | None) -> str | None:
    """The candidate's result from the order (candidate=A) and the swapped order (candidate=B)."""
    if first is None or second is None:
        return None
    return AS_A[first] if AS_A[first] == AS_B[second] else "tie"


def compare(judge: ChatModel, prompts: Sequence[str], candidate: Sequence[str], champion: Sequence[str], *,
            controls: SamplingControls | None = None, max_new_tokens: int = 8) -> PairwiseResult:
    """Both orders for every prompt in one batched call to the judge; greedy, so reruns agree."""
    if not (len(prompts) == len(candidate) == len(champion)):
        raise ValueError("prompts, candidate and champion outputs must be the same length")
    convs = [[{"role": "user", "content": PAIRWISE_PROMPT.format(prompt=p, a=a, b=b)}]
             for p, x, y in zip(prompts, candidate, champion, strict=True) for a, b in ((x, y), (y, x))]
    params = SamplingParams.of(controls, n=1, max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    answers = [parse_verdict(o[0]) for o in judge.generate(convs, params)] if convs else []
    orders = [(answers[2 * i], answers[2 * i + 1]) for i in range(len(prompts))]
    valid = [(a, b) for a, b in orders if a is not None and b is not None]
    results = [outcome(a, b) for a, b in valid]
    decisive = [a for a in answers if a in ("A", "B")]
    wins, ties, losses = (results.count(k) for k in ("win", "tie", "loss"))
    return PairwiseResult(
        n=len(prompts), wins=wins, ties=ties, losses=losses, invalid=len(orders) - len(valid),
        win_rate=round((wins + ties / 2) / len(valid), 4) if valid else None,
        first_position_rate=round(decisive.count("A") / len(decisive), 4) if decisive else None,
        consistency=round(sum(AS_A[a] == AS_B[b] for a, b in valid) / len(valid), 4) if valid else None,
        judge=judge.name)
