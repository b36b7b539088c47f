"""What the trace viewer shows, read from the store as plain dicts (the templates never touch the ORM)."""

from __future__ import annotations

import re
from collections import defaultdict

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.store.models import (
    Candidate,
    Evaluation,
    ModelVersion,
    PreferencePair,
    Prompt,
    Round,
    TraceEvent,
    Video,
)
from promptloop.store.traces import fold_items, list_runs, run_events

_ROUND_IN_THREAD = re.compile(r"-r(\d+)-")
PRINCIPLES = {"harmless", "accurate", "helpful"}


def round_of(thread_id: str) -> int | None:
    """Collection threads are named <kind>-r<round>-...; app runs have no round."""
    m = _ROUND_IN_THREAD.search(thread_id)
    return int(m.group(1)) if m else None


def runs(engine: Engine, *, graph: str | None = None, round_index: int | None = None, limit: int = 200) -> list[dict]:
    rows = list_runs(engine, limit=limit, graph=graph)
    for r in rows:
        r["round"] = round_of(r["trace_id"])
    if round_index is not None:
        rows = [r for r in rows if r["round"] == round_index]
    return rows


def graphs(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return sorted(s.exec(select(TraceEvent.graph).distinct()).all())


def run_detail(engine: Engine, trace_id: str) -> dict:
    """The node timeline (offsets and durations in ms) and the items of the run's last state."""
    events = run_events(engine, trace_id)
    t0 = min(e.started_at for e in events)
    end = max((e.ended_at or e.started_at) for e in events)
    span = max((end - t0).total_seconds() * 1000, 1.0)
    timeline = []
    for e in events:
        offset = (e.started_at - t0).total_seconds() * 1000
        timeline.append({"node": e.node, "graph": e.graph, "offset_ms": round(offset, 1),
                         "duration_ms": round(e.duration_ms or 0.0, 1), "error": e.error,
                         "model_version": e.model_version, "left_pct": round(100 * offset / span, 2),
                         "width_pct": max(round(100 * (e.duration_ms or 0.0) / span, 2), 0.3)})
    items = fold_items(events)  # traces hold what each node changed; the items are rebuilt from those
    with Session(engine) as s:
        videos = _videos_by_text(s, [c for it in items for c in it.get("candidates", [])])
    return {"trace_id": events[0].thread_id, "graph": events[0].graph, "round": round_of(events[0].thread_id),
            "started_at": t0, "total_ms": round(span, 1), "timeline": timeline,
            "items": [_item_view(it, videos) for it in items]}


def _item_view(item: dict, videos: dict[str, list[dict]]) -> dict:
    cands = item.get("candidates", [])
    crits = item.get("critiques", [])
    rewards = item.get("rewards", [])
    best = max(range(len(rewards)), key=lambda i: rewards[i].get("total", 0.0)) if rewards else None
    rows = []
    for i, text in enumerate(cands):
        k = crits[i] if i < len(crits) else {}
        r = rewards[i] if i < len(rewards) else {}
        dims = r.get("dimensions", {k2: v for k2, v in r.items() if k2 != "total" and isinstance(v, (int, float))})
        rows.append({"index": i, "text": text, "harmless": k.get("harmless"), "accurate": k.get("accurate"),
                     "helpful": k.get("helpful"), "issues": k.get("issues", []), "dimensions": dims,
                     "total": r.get("total"), "best": i == best, "videos": videos.get(text, [])})
    return {"prompt": item.get("prompt", ""), "verdict": item.get("verdict", {}), "candidates": rows,
            # the judge's other dimensions (harmless/accurate/helpful are the critic's columns already)
            "dimension_names": sorted({d for row in rows for d in row["dimensions"]} - PRINCIPLES),
            "final_prompt": item.get("final_prompt"), "refused": item.get("refused", False),
            "reason": item.get("reason", ""), "trail": item.get("trail", [])}


def _videos_by_text(s: Session, texts: list[str]) -> dict[str, list[dict]]:
    if not texts:
        return {}
    rows = s.exec(select(Candidate.text, Video).join(Video, Video.candidate_id == Candidate.id)
                  .where(Candidate.text.in_(texts))).all()
    out: dict[str, list[dict]] = defaultdict(list)
    for text, v in rows:
        out[text].append(_video_view(v))
    return out


def _video_view(v: Video) -> dict:
    return {"id": v.id, "status": v.status, "model": v.model, "seed": v.seed, "error": v.error,
            "frames": v.frames, "fps": v.fps, "size": f"{v.width}x{v.height}" if v.width else None}


def pairs(engine: Engine, *, round_index: int | None = None, limit: int = 100) -> list[dict]:
    with Session(engine) as s:
        q = select(PreferencePair, Round.index).join(Round, PreferencePair.round_id == Round.id, isouter=True)
        if round_index is not None:
            q = q.where(Round.index == round_index)
        rows = s.exec(q.order_by(PreferencePair.id.desc()).limit(limit)).all()
        ids = {i for p, _ in rows for i in (p.chosen_id, p.rejected_id)}
        cands = {c.id: c for c in s.exec(select(Candidate).where(Candidate.id.in_(ids)))} if ids else {}
        prompts = {p.id: p.text for p in s.exec(select(Prompt).where(Prompt.id.in_({p.prompt_id for p, _ in rows})))}
        vids: dict[int, list[dict]] = defaultdict(list)
        if ids:
            for v in s.exec(select(Video).where(Video.candidate_id.in_(ids))):
                vids[v.candidate_id].append(_video_view(v))
    return [{"id": p.id, "round": r, "prompt": prompts.get(p.prompt_id, ""), "margin": p.margin,
             "feedback_level": p.feedback_level, "rule": p.rule,
             "chosen": {"text": cands[p.chosen_id].text, "scores": p.chosen_scores, "videos": vids[p.chosen_id]},
             "rejected": {"text": cands[p.rejected_id].text, "scores": p.rejected_scores,
                          "videos": vids[p.rejected_id]}}
            for p, r in rows]


def decision_view(decision: dict | None) -> dict | None:
    """The gate's recorded decision as the versions page shows it: rule, gain and interval, guardrails, pairwise."""
    if not decision:
        return None
    primary = decision.get("primary") or {}
    return {"promoted": decision.get("promoted"), "rule": decision.get("rule"), "reason": decision.get("reason"),
            "metric": primary.get("metric"), "gain": primary.get("gain"), "interval": primary.get("interval"),
            "guardrails": decision.get("guardrails") or [], "pairwise": decision.get("pairwise")}


def versions(engine: Engine) -> list[dict]:
    """Model versions in lineage order (depth-first from the base), with their held-out judge total."""
    with Session(engine) as s:
        rows = list(s.exec(select(ModelVersion).order_by(ModelVersion.id)))
        rounds = {r.id: r.index for r in s.exec(select(Round))}
        evals = {e.model_version_id: e.metrics.get("judge_total") for e in
                 s.exec(select(Evaluation).where(Evaluation.bench == "eval").order_by(Evaluation.id))}
    names = {v.id: v.name for v in rows}
    children: dict[int | None, list[ModelVersion]] = defaultdict(list)
    for v in rows:
        children[v.parent_id].append(v)
    out: list[dict] = []

    def walk(parent: int | None, depth: int) -> None:
        for v in children.get(parent, []):
            out.append({"name": v.name, "depth": depth, "status": v.status, "algorithm": v.algorithm,
                        "round": rounds.get(v.round_id), "parent": names.get(v.parent_id),
                        "first_loss": v.metrics.get("first_loss"), "last_loss": v.metrics.get("last_loss"),
                        "judge_total": evals.get(v.id), "decision": decision_view(v.metrics.get("decision")),
                        "adapter_path": v.adapter_path, "created_at": v.created_at})
            walk(v.id, depth + 1)

    walk(None, 0)
    return out


def loss_curves(engine: Engine) -> dict[str, list[list[float]]]:
    """Each trained version's stored loss curve (optimizer step, loss), oldest version first."""
    with Session(engine) as s:
        rows = s.exec(select(ModelVersion).order_by(ModelVersion.id)).all()
    return {v.name: v.metrics["loss_curve"] for v in rows if (v.metrics or {}).get("loss_curve")}


def evaluations(engine: Engine, bench: str = "eval") -> list:
    """SystemResults of one bench from the evaluations table (latest row per system), for plot_rounds."""
    from promptloop.evaluation.runner import SystemResult

    with Session(engine) as s:
        rows = list(s.exec(select(Evaluation).where(Evaluation.bench == bench).order_by(Evaluation.id)))
        vmap = {v.id: v for v in s.exec(select(ModelVersion))}
        rounds = {r.id: r.index for r in s.exec(select(Round))}
    latest = {e.system: e for e in rows}
    out = []
    for system, e in latest.items():
        v = vmap.get(e.model_version_id)
        out.append(SystemResult(system=system, label=system, metrics=e.metrics, version=v.name if v else None,
                                round_index=rounds.get(v.round_id) if v and v.round_id else None,
                                algorithm=v.algorithm if v else None))
    return out

