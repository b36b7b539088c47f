"""VPO stage 2 / Prompt-A-Video: sample n candidates, score them, keep preference pairs.

Pair selection rules (``CollectContext.rule``):

- ``margin`` (default): chosen = the best candidate by reward total; rejected =
  candidates whose total is at least ``margin`` lower, preferring one that
  violates a principle (its critique fails a threshold), then the lowest total.

Under every rule, a candidate the critic marks degenerate (looping, meta-text,
cut off, empty, far too long) is never the chosen side, and it is the first
choice for the rejected side whatever its total: a judge that pays for length
or loops would otherwise teach exactly that. A pair whose chosen side has
over ``length_ratio`` times the rejected side's words is kept only when the
chosen side also keeps the user's intent better (higher intent similarity), so
"longer" alone never wins a pair.
- ``pareto`` (VPO, video level): i beats j only if i is at least as good on
  every reward dimension, better on one, and the totals differ by ``margin``.
- ``gated`` (Prompt-A-Video): the chosen side must also pass every principle
  threshold (absolute minimums), plus the total margin.
- ``teacher`` (``collect pairs --teacher``): the chosen side is the teacher's
  best rewrite, the rejected side one of the student's own samples, and the
  judge must agree: the teacher's total at least ``margin`` above the
  student sample's (or the sample degenerate). A teacher rewrite the judge
  does not prefer makes no pair; the teacher is a source, not a verdict.

Safety pairs (VPO's harmlessness, rule ``safety``): a request the guard
flagged and the sanitiser cut to its benign core also yields one pair
whatever the rule: chosen = its final rewrite (it passed the output guard)
when that keeps the core (its accuracy, judged against the core, passes the
threshold) and is not degenerate; rejected = a rewrite of the request as the
user wrote it that the guard finds unsafe (``collect.unsanitized_samples``),
else the guard's refusal. The prompt side is the request as written, so the
rewriter learns to drop the harm itself and the guard becomes a net.

Prompts with no pair above the margin are skipped (and counted). Both sides'
full scores and the margin are stored with the pair.

With video-level feedback (``--video``) the rules run on the combined reward
(text and video totals, see agents/judge.py ``combine_levels``; ``pareto``
then compares video dimensions too), and each pair is labelled with the
feedback that supports it: ``both`` (chosen wins on text and video totals),
``video`` (only on video) or ``text``. Its sides list their video rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from sqlalchemy.engine import Engine

from promptloop.agents.safety.guard import Verdict, refusal_message
from promptloop.agents.text_checks import words
from promptloop.agents.text_critic import Critique, Thresholds
from promptloop.agents.video.feedback import VideoFeedback, feedback_level
from promptloop.config import CollectSettings, default_of
from promptloop.graphs.collection import CollectContext, build_collect_graph
from promptloop.graphs.persist import store_item
from promptloop.graphs.rewrite import Item, RewriteAgents
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope

GRAPH_NAME = "collect_pairs"
RULES = ("margin", "pareto", "gated", "teacher")
SAFETY_RULE = "safety"  # the rule stored with safety pairs, made alongside whichever rule the collection uses


@dataclass(frozen=True)
class PairChoice:
    chosen: int
    rejected: int
    margin: float
    violates: bool
    degenerate: tuple[str, ...] = ()  # why the rejected side is degenerate (empty: it is not)
    longer: bool = False  # chosen has over length_ratio x the rejected side's words (kept: it wins on intent)


def select_pairs(rewards: list[dict], critiques: list[dict], *, rule: str = "margin", margin: float = 0.1,
                 thresholds: Thresholds | None = None, max_pairs: int = 1,
                 length_ratio: float = default_of(CollectSettings, "length_ratio"),
                 words: list[int] | None = None, teacher: set[int] | None = None) -> list[PairChoice]:
    """Indices of (chosen, rejected) candidates under ``rule``; see the module docstring.

    ``words`` are the candidates' word counts (length control is off without them); ``teacher`` the
    indices of the teacher's candidates (rule ``teacher``).
    """
    if rule not in RULES:
        raise ValueError(f"unknown pair rule '{rule}'; expected one of {', '.join(RULES)}")
    t = thresholds or Thresholds()
    totals = [r["total"] for r in rewards]
    if len(totals) < 2:
        return []
    crits = [Critique.model_validate(c) for c in critiques]
    fails = [bool(c.failing(t)) for c in crits]
    intent = [c.checks.get("intent_similarity", 0.0) for c in crits]
    order = sorted(range(len(totals)), key=lambda i: -totals[i])
    theirs = teacher or set()
    usable = [i for i in order if not crits[i].degenerate and (rule != "teacher" or i in theirs)]
    if not usable:
        return []
    best = usable[0]
    if rule == "gated" and fails[best]:
        return []

    def dominates(i: int, j: int) -> bool:
        di, dj = rewards[i]["dimensions"], rewards[j]["dimensions"]
        keys = [k for k in di if di[k] is not None and dj.get(k) is not None]
        return all(di[k] >= dj[k] for k in keys) and any(di[k] > dj[k] for k in keys)

    def longer(j: int) -> bool:
        return bool(words and length_ratio and words[best] > length_ratio * max(1, words[j]))

    losers = [j for j in order if j != best and (rule != "teacher" or j not in theirs) and (crits[j].degenerate or (
        totals[best] - totals[j] >= margin and (rule != "pareto" or dominates(best, j))))]
    losers = [j for j in losers if not longer(j) or intent[best] > intent[j]]
    # degenerate first, then principle violations, then the worst total
    losers.sort(key=lambda j: (not crits[j].degenerate, not fails[j], totals[j]))
    return [PairChoice(best, j, round(totals[best] - totals[j], 4), fails[j], tuple(crits[j].degenerate), longer(j))
            for j in losers[:max_pairs]]


def safety_choice(item: Item, thresholds: Thresholds) -> tuple[int, str, str, list[str]] | None:
    """(chosen candidate index, rejected text, its origin, the request's flagged categories) of a sanitised
    item's safety pair, or None."""
    core = item.get("core")
    if item.get("refused") or not core or core == item["prompt"] or item.get("final_prompt") not in item["candidates"]:
        return None
    j = item["candidates"].index(item["final_prompt"])
    crit = Critique.model_validate(item["critiques"][j])
    if crit.degenerate or crit.accurate < thresholds.accurate:
        return None
    flagged = Verdict.model_validate(item["verdict"]).flagged
    unsafe = item.get("unsafe_rewrites") or []
    if unsafe:
        return j, unsafe[0], "unsanitized", flagged
    return j, refusal_message(flagged), "refusal", flagged


def persist_pairs(engine: Engine, items: list[Item], prompt_ids: list[int], ctx: CollectContext) -> dict[str, int]:
    counts = {"pairs": 0, "skipped_prompts": 0, "candidates": 0}
    with session_scope(engine) as s:
        for item, pid in zip(items, prompt_ids, strict=True):
            ids = store_item(s, item, pid, ctx)
            if not ids:  # blocked by the guard: nothing was sampled
                counts["skipped_prompts"] += 1
                continue
            counts["candidates"] += len(ids)
            given = set(item.get("given", []))
            choices = select_pairs(item["rewards"], item["critiques"], rule=ctx.rule, margin=ctx.margin,
                                   thresholds=ctx.thresholds, max_pairs=ctx.max_pairs_per_prompt,
                                   length_ratio=ctx.length_ratio, words=[len(words(c)) for c in item["candidates"]],
                                   teacher={k for k, c in enumerate(item["candidates"]) if c in given})
            safety = safety_choice(item, ctx.thresholds)
            if safety is not None:
                j, text, origin, flagged = safety
                rej, _ = repo.add_candidate(s, pid, text, model_version_id=ctx.model_version_id,
                                            round_id=ctx.round_id, origin=origin, sampling_params=ctx.sampling_record())
                chosen_total = item["rewards"][j]["total"]
                _, created = repo.add_pair(
                    s, pid, ids[j], rej.id, margin=round(chosen_total, 4), round_id=ctx.round_id, rule=SAFETY_RULE,
                    chosen_scores=_pair_side(item["rewards"][j], []),
                    rejected_scores={"kind": origin, "categories": flagged, "core": item["core"]})
                counts["safety_pairs"] = counts.get("safety_pairs", 0) + created
            if not choices:
                counts["skipped_prompts"] += 1
            videos = item.get("videos") or []
            for ch in choices:
                chosen, rejected = item["rewards"][ch.chosen], item["rewards"][ch.rejected]
                level = feedback_level(chosen, rejected) if videos else "text"
                _, created = repo.add_pair(
                    s, pid, ids[ch.chosen], ids[ch.rejected], margin=ch.margin, feedback_level=level,
                    round_id=ctx.round_id, rule=ctx.rule,
                    chosen_scores=_pair_side(chosen, videos[ch.chosen] if videos else []),
                    rejected_scores={**_pair_side(rejected, videos[ch.rejected] if videos else []),
                                     "violates": ch.violates, "degenerate": list(ch.degenerate),
                                     "longer_chosen": ch.longer})
                counts["pairs"] += created
                if videos:
                    counts[f"{level}_level_pairs"] = counts.get(f"{level}_level_pairs", 0) + created
    return counts


def _pair_side(reward: dict, renders: list[dict]) -> dict:
    """One side's full scores as stored with the pair: every dimension, the totals, and its video rows."""
    side = {**reward["dimensions"], "total": reward["total"]}
    for level in ("text_total", "video_total"):
        if level in reward:
            side[level] = reward[level]
    if renders:
        side["video_ids"] = [r["video_id"] for r in renders if r.get("status") == "ok"]
    return side


def build_collect_pairs_graph(agents: RewriteAgents | Callable[[], RewriteAgents] | None, engine: Engine | None, *,
                              checkpointer: Any = None, video: Callable[[], VideoFeedback] | None = None
                              ) -> CompiledStateGraph:
    return build_collect_graph(GRAPH_NAME, agents, engine, persist_pairs, checkpointer=checkpointer,
                               video_feedback=video)
