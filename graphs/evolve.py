"""Reward-guided prompt evolution (Prompt-A-Video stage 1) into the SFT pool.

Per prompt: a population sampled from the rewriter, scored by the reward
judge (fitness = total). Each generation the LLM sees the user's prompt and
the elites with their per-dimension scores and writes offspring, alternating
mutation (improve the best on its weakest dimension) and crossover (combine
the two best); offspring are scored and the population keeps the top
``population`` (elitism), so the best fitness never decreases. After
``generations`` the top individuals become SFT examples (source ``evolve``)
and every individual is stored as a candidate with its lineage (parents,
generation), including those that did not survive selection. All prompts of a
chunk breed in one batched model call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from sqlalchemy.engine import Engine

from promptloop.agents.judge import JudgeInput
from promptloop.agents.rewriter import clean_rewrite, rewrite_complete, template
from promptloop.agents.safety.sanitizer import screen
from promptloop.graphs.collection import CollectContext, CollectState, build_collect_graph
from promptloop.graphs.persist import store_input_verdict, store_scores
from promptloop.graphs.rewrite import RewriteAgents, agents_of, apply_screen, lazy_agents, target_of
from promptloop.graphs.tracing import graph_node
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope

GRAPH_NAME = "evolve"


@dataclass
class EvolveContext(CollectContext):
    generations: int = 3
    population: int = 4
    offspring: int = 4
    elites_shown: int = 3
    keep_best: int = 1  # best individuals per prompt that become SFT examples


def _fitness(ind: dict) -> float:
    return ind["reward"]["total"]


def build_evolve_graph(agents: RewriteAgents | Callable[[], RewriteAgents] | None, engine: Engine | None, *,
                       checkpointer: Any = None, name: str = GRAPH_NAME) -> CompiledStateGraph:
    """The collection graph (fan-out, gather, persist) around the evolution pipeline."""
    return build_collect_graph(name, agents, engine, persist_evolution, pipeline=build_evolution_graph(name=name),
                               context_schema=EvolveContext, checkpointer=checkpointer)


@functools.cache
def _templates() -> tuple[str, str]:
    return template("evolve_mutate.txt"), template("evolve_crossover.txt")


def score(items: list[dict], agents: RewriteAgents) -> None:
    """Fill in critique and reward for every individual that has none (batched over all prompts)."""
    todo = [(it, ind) for it in items if not it.get("refused") for ind in it["population"] if "reward" not in ind]
    if not todo:
        return
    crits = agents.critic.critique_many([(target_of(it), ind["text"]) for it, ind in todo])
    rewards = agents.judge.score_many([JudgeInput(user_prompt=target_of(it), candidate=ind["text"], critique=k)
                                       for (it, ind), k in zip(todo, crits, strict=True)])
    for (_, ind), k, r in zip(todo, crits, rewards, strict=True):
        ind["critique"], ind["reward"] = k.model_dump(), r.model_dump()


def seed(state: CollectState, runtime: Runtime[EvolveContext]) -> dict:
    """Generation 0: guard each prompt, sample a population from the rewriter, score it."""
    ctx, a = runtime.context, agents_of(runtime)
    items = [dict(it) for it in state["items"]]
    for it, s in zip(items, screen(a.guard, [it["prompt"] for it in items]), strict=True):
        it.update(generation=0, history=[], population=[])
        apply_screen(it, s)
    live = [it for it in items if not it.get("refused")]
    results = a.rewriter.rewrite([it["core"] for it in live], ctx.sampling(n=ctx.population),
                                 adapter=ctx.model_version)
    for it, res in zip(live, results, strict=True):
        texts = list(dict.fromkeys(c for c in res.candidates if c)) or [it["core"]]
        it["population"] = [{"text": t, "generation": 0, "parents": [], "op": "sample"} for t in texts]
    score(items, a)
    for it in live:
        it["archive"] = list(it["population"])  # every individual ever scored, for lineage
        it["history"] = [max(_fitness(i) for i in it["population"])]
    return {"items": items}


def breed(state: CollectState, runtime: Runtime[EvolveContext]) -> dict:
    """One generation: the LLM sees the elites with their scores and writes offspring (mutation / crossover)."""
    ctx, a = runtime.context, agents_of(runtime)
    mutate_tmpl, cross_tmpl = _templates()
    items = [dict(it) for it in state["items"]]
    jobs: list[tuple[dict, list[str], str]] = []
    crit = a.critic
    for it in items:
        if it.get("refused"):
            continue
        elites = sorted(it["population"], key=_fitness, reverse=True)[: ctx.elites_shown]
        listing = "\n".join(
            f"{i + 1}. {e['text']}\n   scores: " + ", ".join(
                f"{k} {v:.2f}" for k, v in e["reward"]["dimensions"].items() if v is not None)
            for i, e in enumerate(elites))
        for j in range(ctx.offspring):
            if j % 2 == 1 and len(elites) >= 2:
                content = cross_tmpl.format(prompt=target_of(it), a=elites[0]["text"], b=elites[1]["text"],
                                            min_words=crit.min_words, max_words=crit.max_words)
                jobs.append((it, [elites[0]["text"], elites[1]["text"]], content))
            else:
                content = mutate_tmpl.format(prompt=target_of(it), elites=listing, min_words=crit.min_words,
                                             max_words=crit.max_words)
                jobs.append((it, [elites[0]["text"]], content))
    if jobs:
        params = ctx.sampling(n=1).model_copy(update={"seed": (ctx.seed or 0) + 1000 * (items[0]["generation"] + 1),
                                                      "until": rewrite_complete})
        outs = a.rewriter.model.generate([[{"role": "user", "content": c}] for _, _, c in jobs], params,
                                         adapter=ctx.model_version)
        gen = items[0]["generation"] + 1
        for (it, parents, _), o in zip(jobs, outs, strict=True):
            text = clean_rewrite(o[0])
            if text and all(text != ind["text"] for ind in it["population"]):
                it["population"] = [*it["population"], {"text": text, "generation": gen, "parents": parents,
                                                        "op": "crossover" if len(parents) == 2 else "mutation"}]
    score(items, a)
    for it in items:
        known = {ind["text"] for ind in it.get("archive", [])}
        it["archive"] = it.get("archive", []) + [ind for ind in it.get("population", []) if ind["text"] not in known]
        it["generation"] = it.get("generation", 0) + 1
        if it.get("refused"):
            continue
        it["population"] = sorted(it["population"], key=_fitness, reverse=True)[: ctx.population]  # elitism
        it["history"] = [*it["history"], _fitness(it["population"][0])]
    return {"items": items}


def route(state: CollectState, runtime: Runtime[EvolveContext]) -> str:
    return "breed" if state["items"][0].get("generation", 0) < runtime.context.generations else END


def build_evolution_graph(agents: RewriteAgents | Callable[[], RewriteAgents] | None = None, *,
                          name: str = GRAPH_NAME) -> CompiledStateGraph:
    """seed -> breed (G times): one part's prompts evolve together, each model call batched over all of them."""
    deps = {"agents": lazy_agents(agents)} if agents is not None else {}
    g = StateGraph(CollectState, context_schema=EvolveContext)
    g.add_node("seed", graph_node(name, "seed", seed, context_type=EvolveContext, **deps))
    g.add_node("breed", graph_node(name, "breed", breed, context_type=EvolveContext, **deps))
    g.add_edge(START, "seed")
    g.add_conditional_edges("seed", route, ["breed", END])
    g.add_conditional_edges("breed", route, ["breed", END])
    return g.compile(name=f"{name}.evolution")


def persist_evolution(engine: Engine, items: list[dict], prompt_ids: list[int], ctx: EvolveContext) -> dict[str, int]:
    counts = {"individuals": 0, "sft_evolve": 0, "skipped_prompts": 0}
    sampling = {"population": ctx.population, "offspring": ctx.offspring, "generations": ctx.generations,
                "temperature": ctx.temperature, "seed": ctx.seed}
    with session_scope(engine) as s:
        for it, pid in zip(items, prompt_ids, strict=True):
            store_input_verdict(s, it, pid)
            if it.get("refused"):
                counts["skipped_prompts"] += 1
                continue
            ids: dict[str, int] = {}
            for ind in sorted(it["archive"], key=lambda i: i["generation"]):
                lineage = {"generation": ind["generation"], "op": ind["op"],
                           "parents": [ids[p] for p in ind["parents"] if p in ids], "parent_texts": ind["parents"]}
                cand, created = repo.add_candidate(s, pid, ind["text"], model_version_id=ctx.model_version_id,
                                                   round_id=ctx.round_id, origin="evolve", sampling_params=sampling,
                                                   lineage=lineage)
                ids[ind["text"]] = cand.id
                counts["individuals"] += created
                store_scores(s, cand.id, ind["critique"], ind["reward"])
            for ind in sorted(it["population"], key=_fitness, reverse=True)[: ctx.keep_best]:
                _, created = repo.add_sft_example(
                    s, pid, ind["text"], status="accepted", source="evolve", candidate_id=ids[ind["text"]],
                    round_id=ctx.round_id,
                    critique_trail=[{"fitness_history": it["history"], "generation": ind["generation"],
                                     "op": ind["op"], "parents": ind["parents"], "fitness": _fitness(ind)}])
                counts["sft_evolve"] += created
    return counts
