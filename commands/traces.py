"""`promptloop traces list|show`: what the agents did, node by node."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from promptloop.commands.shared import out, print_json, services_of

app = typer.Typer(help="What the agents did: graph runs and their node calls.", no_args_is_help=True)


@app.command("list")
def traces_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    graph: Annotated[str | None, typer.Option(help="Only runs of this graph (e.g. rewrite)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent graph runs, newest first."""
    from promptloop.store.traces import list_runs

    runs = list_runs(services_of(ctx).engine, limit=limit, graph=graph)
    if as_json:
        print_json(runs)
        return
    table = Table("trace id", "graph", "started", "nodes", "node time", "errors")
    for r in runs:
        table.add_row(r["trace_id"], r["graph"], str(r["started_at"])[:19], str(r["nodes"]),
                      f"{r['node_ms'] / 1000:.1f} s", str(r["errors"]))
    out.print(table)


@app.command("show")
def traces_show(
    ctx: typer.Context,
    trace_id: Annotated[str, typer.Argument(help="Trace id (a unique prefix is enough)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One run as a tree: each node with timing, candidates, critique scores, verdicts and the output."""
    from promptloop.store.traces import fold_events, run_events

    events = run_events(services_of(ctx).engine, trace_id)
    if as_json:
        print_json([e.model_dump() for e in events])
        return
    total = sum(e.duration_ms or 0 for e in events) / 1000
    tree = Tree(f"[bold]{events[0].graph}[/] run {events[0].thread_id}  ({total:.1f} s)")
    nodes = {}
    for e in events:
        label = f"[bold]{e.node}[/]  {(e.duration_ms or 0) / 1000:.2f} s"
        if e.model_version:
            label += f"  [dim]model {e.model_version}[/]"
        nodes[e.id] = tree.add(label + (f"  [red]error: {e.error}[/]" if e.error else ""))
    for e, item, change in fold_events(events):
        describe_item(nodes[e.id], e.node, item, change)
    out.print(tree)


def describe_item(node: Tree, name: str, it: dict, changed: dict[str, Any]) -> None:
    """What a node did to one item, in a line or a few (the item as it stood after that node)."""
    br = node.add(f"[cyan]{it.get('prompt', '')}[/]")
    if name in ("guard_input", "guard_output"):
        v = it.get("verdict" if name == "guard_input" else "final_verdict") or {}
        if v:
            br.add(f"verdict: {v.get('action')} (safe={v.get('safe')}) {v.get('reason', '')}")
        if it.get("refused"):
            br.add(f"[red]refused[/]: {it.get('reason', '')}")
        if name == "guard_output" and it.get("final_prompt"):
            br.add(f"[green]final[/]: {it['final_prompt']}")
    elif name == "rewrite":
        for i, c in enumerate(it.get("candidates", []), 1):
            br.add(f"{i}. {c}")
    elif name == "critique":
        for c, k, r in zip(it.get("candidates", []), it.get("critiques", []), it.get("rewards", []), strict=False):
            br.add(f"harmless {k['harmless']:.2f} accurate {k['accurate']:.2f} helpful {k['helpful']:.2f} "
                   f"reward {r['total']:.2f}  [dim]{c[:80]}[/]")
    elif name in ("pick_best", "refine") and it.get("trail"):
        t = it["trail"][-1]
        br.add(f"step {t['step']} ({t['origin']}) reward {t['reward']:.2f}: {t['text'][:120]}")
    else:
        br.add("changed: " + ", ".join(k for k in changed if k not in ("i", "prompt")))
