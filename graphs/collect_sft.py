"""VPO stage 1: rewrite -> principle critique -> refine until every principle passes (or k steps) -> final
guard -> an SFT example. Examples that never pass are stored as rejected with the reason, not dropped;
a request the guard blocks becomes a refusal target, so the rewriter learns harmlessness too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from sqlalchemy.engine import Engine

from promptloop.agents.text_critic import Critique
from promptloop.graphs.collection import CollectContext, build_collect_graph
from promptloop.graphs.persist import store_item
from promptloop.graphs.rewrite import Item, RewriteAgents
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope

GRAPH_NAME = "collect_sft"


def persist_sft(engine: Engine, items: list[Item], prompt_ids: list[int], ctx: CollectContext) -> dict[str, int]:
    counts = {"accepted": 0, "rejected": 0, "candidates": 0}
    source = f"teacher:{ctx.teacher}" if ctx.teacher else "vpo"
    with session_scope(engine) as s:
        for item, pid in zip(items, prompt_ids, strict=True):
            cand_ids = store_item(s, item, pid, ctx)
            counts["candidates"] += len(cand_ids)
            trail = list(item.get("trail", []))
            if item.get("refused") and not item.get("candidates"):
                status, reason, target, cand = "accepted", f"refusal: {item.get('reason', '')}", item["final_prompt"], None
            elif item.get("refused"):
                status, reason, target, cand = "rejected", item.get("reason", "refused"), item["final_prompt"], None
            elif item.get("fallback"):  # the output guard's stand-in, not a rewrite the critic judged
                status, reason, target, cand = "rejected", item.get("reason", "fallback"), item["final_prompt"], None
            else:
                crit = Critique.model_validate(item["current_critique"])
                failing = crit.failing(ctx.thresholds)
                status = "rejected" if failing else "accepted"
                reason = (f"below threshold after {item.get('steps', 0)} refine step(s): {', '.join(failing)}; "
                          + "; ".join(crit.issues[:3])) if failing else None
                target = item["final_prompt"]
                cand = cand_ids[item["candidates"].index(item["current"])] if item["current"] in item["candidates"] else None
                trail.append({"final": {"harmless": crit.harmless, "accurate": crit.accurate,
                                        "helpful": crit.helpful}})
            _, created = repo.add_sft_example(s, pid, target, status=status, source=source, candidate_id=cand,
                                              round_id=ctx.round_id, reason=reason, critique_trail=trail)
            counts[status] += created
    return counts


def build_collect_sft_graph(agents: RewriteAgents | Callable[[], RewriteAgents] | None, engine: Engine | None, *,
                            checkpointer: Any = None) -> CompiledStateGraph:
    return build_collect_graph(GRAPH_NAME, agents, engine, persist_sft, checkpointer=checkpointer)
