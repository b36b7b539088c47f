"""Writing what a graph run produced into the store, with provenance (prompt, round, rewriter version)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel import Session

from promptloop.graphs.rewrite import Item
from promptloop.store import repository as repo

if TYPE_CHECKING:  # pragma: no cover
    from promptloop.graphs.collection import CollectContext


def store_item(s: Session, item: Item, prompt_id: int, ctx: CollectContext) -> list[int]:
    """One prompt's input verdict and all its scored candidates, with the collection's provenance."""
    store_input_verdict(s, item, prompt_id)
    return store_candidates(s, item, prompt_id, round_id=ctx.round_id, version_id=ctx.model_version_id,
                            sampling=ctx.sampling_record(), teacher=ctx.teacher)


def store_candidates(s: Session, item: Item, prompt_id: int, *, round_id: int | None, version_id: int | None,
                     sampling: dict, teacher: str | None = None) -> list[int]:
    """Candidates of one item with their critiques and reward dimensions; returns candidate ids in order.

    A teacher's rewrites (the item's ``given``) are stored once per teacher,
    outside any round and version (a recorded row meets its imported self);
    refinements of them name the teacher in their lineage.
    """
    refined = {t["text"] for t in item.get("trail", []) if t.get("origin") == "refine"}
    given = set(item.get("given", [])) if teacher else set()
    ids = []
    videos = item.get("videos") or []
    for k, (text, crit, reward) in enumerate(zip(item.get("candidates", []), item.get("critiques", []),
                                                 item.get("rewards", []), strict=False)):
        if text in given:  # a refinement that came back unchanged is still the teacher's text
            cand, _ = repo.add_candidate(s, prompt_id, text, origin="teacher", sampling_params=sampling,
                                         lineage={"teacher": teacher})
        else:
            cand, _ = repo.add_candidate(s, prompt_id, text, model_version_id=version_id, round_id=round_id,
                                         origin="refine" if text in refined else "sample", sampling_params=sampling,
                                         lineage={"teacher": teacher} if teacher and text in refined else None)
        store_scores(s, cand.id, crit, reward)
        if k < len(videos):
            link_renders(s, cand.id, videos[k])
        ids.append(cand.id)
    return ids


def link_renders(s: Session, candidate_id: int, renders: list[dict]) -> None:
    """Point a candidate's videos at it (the first candidate wins when two share a text, hence a video)."""
    from promptloop.store.models import Video

    for r in renders:
        row = s.get(Video, r["video_id"])
        if row is not None and row.candidate_id is None:
            row.candidate_id = candidate_id
            s.add(row)


def store_scores(s: Session, candidate_id: int, critique: dict, reward: dict) -> None:
    """A candidate's critique, each reward dimension, and the weighted total (as dimension 'total')."""
    repo.add_critique(s, candidate_id, critique.get("critic_id", "principle-critic-v1"),
                      harmless=critique["harmless"], accurate=critique["accurate"], helpful=critique["helpful"],
                      issues=critique.get("issues", []), suggestion=critique.get("suggestion"),
                      fallback=critique.get("fallback", False))
    judge = reward.get("judge", "reward-judge-v1")
    for dim, score in reward.get("dimensions", {}).items():
        repo.add_reward(s, judge, dim, score, candidate_id=candidate_id)
    for level in ("text_total", "video_total"):  # present when video-level feedback was combined in
        if level in reward:
            repo.add_reward(s, judge, level, reward[level], candidate_id=candidate_id)
    repo.add_reward(s, judge, "total", reward["total"], candidate_id=candidate_id,
                    details={"weights": reward.get("weights", {}), "video_share": reward.get("video_share")})


def store_input_verdict(s: Session, item: Item, prompt_id: int) -> None:
    v = item.get("verdict")
    if v:
        repo.add_verdict(s, item["prompt"], "layered-guard-v1", safe=v["safe"], action=v["action"],
                         categories={k: c["score"] for k, c in v.get("categories", {}).items()},
                         reason=v.get("reason"), prompt_id=prompt_id)
