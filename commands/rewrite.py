"""`promptloop rewrite` and `promptloop guard`: the agent graph and the safety guard on your prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptloop.agents.safety.guard import Verdict
from promptloop.commands.shared import UserError, console, out, print_json, services_of
from promptloop.fileio import append_jsonl, resume_point, write_jsonl
from promptloop.progress import progress_bar
from promptloop.store.importer import read_prompt_file


def read_prompt_lines(file: Path, *, max_chars: int) -> list[str]:
    return [r.text.strip() for r in read_prompt_file(file, max_chars=max_chars)]


def rewrite(
    ctx: typer.Context,
    prompts: Annotated[list[str] | None, typer.Argument(help="User prompt(s); several are batched in one run")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Prompts file (.txt one per line, .jsonl, .csv)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="With --file: JSONL output, one object per input line")] = None,
    n: Annotated[int | None, typer.Option(min=1, max=64, help="Candidates sampled per prompt (default generation.n)")] = None,
    model_version: Annotated[str, typer.Option(help="base | champion | a version name")] = "champion",
    max_refine_steps: Annotated[int | None, typer.Option(min=0, max=10)] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="0 = greedy")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="With --file: prompts per graph run")] = 16,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rewrite prompts with the agent graph: guard, n candidates, critique, refine, final guard."""
    from promptloop.api import rewrite_many, stream_rewrite

    rt = services_of(ctx)
    overrides = dict(n=n, max_refine_steps=max_refine_steps, max_new_tokens=max_new_tokens, temperature=temperature)
    if file is not None:
        if prompts:
            raise UserError("give prompts as arguments or with --file, not both")
        if out_path is None:
            raise UserError("--file needs --out OUT.jsonl")
        lines = read_prompt_lines(file, max_chars=rt.settings.max_prompt_chars)
        start = resume_point(out_path, lines)
        if start:
            console.print(f"{out_path}: {start} of {len(lines)} already done, continuing")
        write_jsonl(out_path, [], keep_lines=start)  # drop a line a crash may have cut short, once
        with progress_bar(console) as progress, out_path.open("a", encoding="utf-8") as fh:
            task = progress.add_task("rewriting", total=len(lines), completed=start)
            for i in range(start, len(lines), batch_size):
                chunk = lines[i:i + batch_size]
                results = rewrite_many(chunk, services=rt, model_version=model_version, **overrides)
                append_jsonl(fh, [r.model_dump(include=_LINE_KEYS) for r in results])
                progress.advance(task, len(chunk))
        console.print(f"wrote {len(lines)} results to {out_path}")
        return
    if not prompts:
        raise UserError("give a prompt, or --file PROMPTS --out OUT.jsonl")
    results = []
    with console.status("loading models") as status:
        for kind, value in stream_rewrite(prompts, services=rt, model_version=model_version, **overrides):
            if kind == "node":
                status.update(f"[bold]{value}[/] done")
                console.print(f"  [dim]node[/] {value}")
            else:
                results = value
    if as_json:
        print_json([r.model_dump() for r in results] if len(results) > 1 else results[0].model_dump())
        return
    for r in results:
        out.print(f"[bold cyan]{r.prompt}[/]")
        if r.refused:  # the sentence an app shows; the guard's scores stay in the trace
            out.print(f"  [red]refused[/]: {r.final_prompt}")
        elif r.fallback:
            out.print(f"  {r.final_prompt}")
            out.print(f"  [dim]{r.reason}[/]")
        else:
            out.print(f"  {r.final_prompt}")
            sc = "  ".join(f"{k} {v:.2f}" for k, v in r.scores.items())
            out.print(f"  [dim]{sc}  reward {r.reward.get('total', 0):.2f}  refine steps {r.refine_steps}[/]")
        out.print(f"  [dim]trace {r.trace_id}[/]")


_LINE_KEYS = {"prompt", "final_prompt", "refused", "reason", "fallback", "scores", "reward", "trace_id", "model_version",
              "refine_steps"}


def guard(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(help="Text to check")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="One text per line (.txt/.jsonl/.csv)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="With --file: JSONL, one verdict per input line")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The safety guard's verdict: allow, sanitize (rewrite safely) or block, with category scores."""
    rt = services_of(ctx)
    if file is not None:
        if out_path is None:
            raise UserError("--file needs --out OUT.jsonl")
        lines = read_prompt_lines(file, max_chars=rt.settings.max_prompt_chars)
        verdicts = []
        for i in range(0, len(lines), 64):
            verdicts += rt.guard.check_many(lines[i:i + 64])
        write_jsonl(out_path, [_verdict_row(v) for v in verdicts])
        flagged = sum(not v.safe for v in verdicts)
        console.print(f"{len(verdicts)} verdicts written to {out_path}: {flagged} unsafe")
        return
    if not text or not text.strip():
        raise UserError("give a text to check, or --file F --out OUT.jsonl")
    v = rt.guard.check(text)
    if as_json:
        print_json(_verdict_row(v))
        return
    color = {"allow": "green", "sanitize": "yellow", "block": "red"}[v.action]
    out.print(f"[{color}]{v.action}[/]  safe={v.safe}  {v.reason}")
    for k, c in sorted(v.categories.items(), key=lambda kv: -kv[1].score):
        out.print(f"  {k:16s} {c.score:.2f}  {c.evidence}")
    for span in v.spans:  # what the sanitiser (a request) or the output guard (a rewrite) would cut
        out.print(f"  [dim]carried by:[/] {span}")


def _verdict_row(v: Verdict) -> dict:
    return {"text": v.text, "safe": v.safe, "action": v.action, "reason": v.reason, "categories": v.scores(),
            "evidence": {k: c.evidence for k, c in v.categories.items()}, "spans": v.spans}


