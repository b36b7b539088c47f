"""`promptloop loop run|watch|status`: the self-improvement loop and its periodic mode."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from promptloop.commands.shared import UserError, console, out, print_json, services_of
from promptloop.progress import collection_progress, training_progress

if TYPE_CHECKING:
    from promptloop.graphs.loop import LoopConfig

app = typer.Typer(help="The self-improvement loop: collect -> train -> evaluate -> promote.", no_args_is_help=True)


def history_table(state: dict) -> Table:
    t = Table(title=f"loop '{state['config']['name']}'", header_style="bold", caption_justify="left",
              caption="gain: the candidate's mean per-prompt gain on the primary metric (judge total) with its "
                      "paired bootstrap interval; R@1 and repetition are guardrails the reward does not optimise "
                      "(champion -> candidate); decision: the gate's rule (promoted, primary: interval not above "
                      "zero, guardrail:<metric>: that metric regressed past its tolerance); fluency: mean token "
                      "log-probability under the frozen base model; pairwise: the eval.judge's win/tie/loss vs the "
                      "champion, both orders asked")
    rows = state.get("history", [])
    pairwise = any((r.get("decision") or {}).get("pairwise") for r in rows)
    for col in ("round", "algo", "data", "train (rows, steps, loss)", "champion total", "new total", "gain [interval]",
                "intent R@1", "repetition", "distinct-2", "fluency", "words", *(["pairwise"] if pairwise else []),
                "decision", "collect s", "train s", "eval s"):
        t.add_column(col, justify="right" if col.endswith(" s") or "total" in col else "left")
    for row in rows:
        c = row.get("collected", {})
        data = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("kind",)) if c else "-"
        tr = row.get("training", {})
        train = (f"{tr.get('rows')}, {tr.get('global_step')}, {tr.get('first_loss')} -> {tr.get('last_loss')}"
                 if "global_step" in tr else tr.get("skipped", "-"))
        ev = row.get("eval", {})
        champ = row.get("champion") or row.get("collected_by")  # rows of older loops have no champion
        cand = next((k for k in ev if k != champ), None)
        dec = row.get("decision", {})
        prim = dec.get("primary") or {}
        gain = (f"{prim['gain']:+.4f} [{prim['interval'][0]:+.3f}, {prim['interval'][1]:+.3f}]"
                if prim.get("interval") else "-")

        if not dec:
            verdict = "-"
        elif dec.get("promoted"):
            verdict = f"[green]promoted {cand}[/]"
        else:
            verdict = f"kept {row.get('champion_after') or champ}" + (f" ({dec['rule']})" if dec.get("rule") else "")
        tm = row.get("timings", {})
        pw = dec.get("pairwise") or {}
        judged = [f"{pw['wins']}/{pw['ties']}/{pw['losses']}" if pw else "-"] if pairwise else []
        t.add_row(str(row["round"]), row.get("algorithm", "-"), data, train,
                  f"{ev[champ]['judge_total']:.4f}" if champ in ev else "-",
                  f"{ev[cand]['judge_total']:.4f}" if cand else "-", gain,
                  *(_moved(ev, champ, cand, m) for m in ("intent_recall_at_1", "repetition", "distinct_2", "fluency")),
                  _moved(ev, champ, cand, "words", ".1f"), *judged, verdict,
                  *(f"{tm[k]:.0f}" if k in tm else "-" for k in ("collect", "train", "evaluate")))
    return t


def _moved(ev: dict, champ: str | None, cand: str | None, metric: str, fmt: str = ".3f") -> str:
    a, b = (ev.get(champ) or {}).get(metric), (ev.get(cand) or {}).get(metric)
    return f"{a:{fmt}} -> {b:{fmt}}" if a is not None and b is not None else "-"


def _print_plan(cfg: LoopConfig, as_json: bool) -> None:
    from promptloop.learners.config import load_config

    plan = cfg.plan()
    for row in plan:  # the recipes are parsed now, so a bad key fails here and not rounds later
        load_config(row["train"], None if row["recipe"].startswith("defaults") else row["recipe"])
    if as_json:
        print_json({"loop": cfg.name, "rounds": plan})
        return
    t = Table("round", "step", "collects", "from", "prompts", "trains", "recipe", "max steps", "eval / red team",
              title=f"loop '{cfg.name}' would run (nothing was run)", header_style="bold")
    for row in plan:
        t.add_row(str(row["round"]), row["step"], row["collect"] + (" + video" if row["video"] else ""),
                  row["collect_from"], str(row["prompts"] or "all"), row["train"], row["recipe"],
                  str(row["max_steps"] or "recipe"), f"{row['eval_prompts']} / {row['redteam_prompts']}")
    out.print(t)


@app.command("run")
def loop_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Loop name: the same name resumes a killed loop")] = "main",
    rounds: Annotated[int, typer.Option(min=1, help="Rounds to run")] = 2,
    schedule: Annotated[str, typer.Option(help="Step per round, comma-separated, the last one repeats: sft, dpo "
                                          "(from the champion's samples), teacher-sft, teacher-dpo (from --teacher)")
                        ] = "sft,dpo",
    teacher: Annotated[str | None, typer.Option(help="Teacher of teacher-* steps: a recorded set (`teacher import`) "
                                                "or, by any other name, the served backends.teacher")] = None,
    teacher_limit: Annotated[int | None, typer.Option(min=1, help="Prompts of a teacher step (default: all the "
                                                      "teacher covers: a recorded set's prompts, or the split's for "
                                                      "a served teacher)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Train prompts collected per round (a recorded teacher's "
                                              "prompts in teacher steps)")] = 64,
    split: Annotated[str, typer.Option(help="Prompt split collected from")] = "train",
    n: Annotated[int | None, typer.Option(min=2, max=64, help="Candidates sampled per prompt (default generation.n)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Prompts per checkpointed collection chunk "
                                                   "(default collect.chunk_size)")] = None,
    max_refine_steps: Annotated[int | None, typer.Option(min=0, max=10)] = None,
    margin: Annotated[float, typer.Option(min=0.0, help="Pair margin on the judge total")] = 0.1,
    eval_limit: Annotated[int | None, typer.Option(min=1, help="Held-out eval prompts (evenly spaced)")] = 32,
    redteam_limit: Annotated[int | None, typer.Option(min=0, help="Red-team prompts per side in eval")] = 12,
    sft_config: Annotated[Path | None, typer.Option(help="YAML SFT learner config")] = None,
    dpo_config: Annotated[Path | None, typer.Option(help="YAML DPO learner config")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Cap on training steps per round")] = None,
    min_improvement: Annotated[float, typer.Option(help="Held-out gain below this counts as stalled")] = 0.0,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many stalled rounds in a row")] = 1,
    start_round: Annotated[int, typer.Option(min=0, help="Store round index of the first round")] = 0,
    worker: Annotated[str | None, typer.Option(help="Claim collection chunks as this worker, so `promptloop collect "
                                               "... --worker OTHER` processes on the same store can help")] = None,
    video_rounds: Annotated[str, typer.Option(help="Comma-separated 0-based dpo rounds whose pairs are judged on "
                                              "rendered videos too (video.* settings), e.g. '1,3'")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each round's step, collection, learner and "
                                          "recipe (checked); run nothing")] = False,
) -> None:
    """Run (or resume) the loop; prints the per-round history and the before/after table."""
    from promptloop.evaluation.runner import EvalConfig
    from promptloop.graphs.loop import LoopConfig, run_loop

    rt = services_of(ctx)
    for f in (sft_config, dpo_config):
        if f is not None and not f.is_file():
            raise UserError(f"learner config not found: {f}")
    try:
        chosen_video_rounds = [int(x) for x in video_rounds.split(",") if x.strip()]
    except ValueError as exc:
        raise UserError(f"--video-rounds takes comma-separated round numbers, got '{video_rounds}'") from exc
    cfg = LoopConfig(name=name, rounds=rounds, schedule=[s.strip() for s in schedule.split(",") if s.strip()],
                     start_round=start_round, split=split, train_limit=limit, n=n, batch_size=batch_size,
                     max_refine_steps=max_refine_steps, margin=margin, eval_limit=eval_limit,
                     redteam_limit=redteam_limit, sft_config=str(sft_config) if sft_config else None,
                     dpo_config=str(dpo_config) if dpo_config else None, max_steps=max_steps,
                     min_improvement=min_improvement, patience=patience, worker=worker,
                     video_rounds=chosen_video_rounds, teacher=teacher, teacher_limit=teacher_limit)
    if dry_run:
        _print_plan(cfg, as_json)
        return
    run = run_loop(rt, cfg, log=lambda m: console.print(m, highlight=False), progress=collection_progress,
                   train_progress=training_progress)
    state = run.state
    if run.already_done:
        console.print(f"loop '{name}' already finished ({state.get('stop_reason')}); use another --name to start "
                      "a new one")
    ecfg = EvalConfig(bench=state["config"]["eval_bench"], limit=state["config"]["eval_limit"],
                      redteam_limit=state["config"]["redteam_limit"])
    trained = [k for r in state.get("history", []) for k in r.get("eval", {}) if k != r.get("collected_by")]
    systems = ["raw", "base", *trained, "champion"]
    from promptloop.commands.evaluate import run_eval
    from promptloop.evaluation.report import table

    report, js, png = run_eval(rt, systems, ecfg, out_dir=rt.settings.reports_dir / f"loop-{name}",
                               title=f"loop '{name}': held-out metrics per round")
    if as_json:
        print_json({"state": state, "eval": report.to_json()})
        return
    out.print(history_table(state))
    out.print(table(report, title=f"before / after: {report.bench}, {report.n_prompts} held-out prompts"))
    console.print(f"{state.get('stop_reason', '')}; champion [bold]{state.get('champion')}[/]; wrote {js}"
                  + (f" and {png}" if png else ""))


@app.command("status")
def loop_status(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Loop name")] = "main",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Where a loop stands: round, next stage, champion, history."""
    from promptloop.graphs.loop import loop_state

    rt = services_of(ctx)
    state = loop_state(rt.checkpointer, name, rt.engine)
    if state is None:
        raise UserError(f"no loop named '{name}' (start one with `promptloop loop run --name {name}`)")
    if as_json:
        print_json(state)
        return
    out.print(history_table(state))
    nxt = state["next"][0] if state["next"] else "finished"
    console.print(f"round {state.get('round', 0)}, next stage: {nxt}; champion {state.get('champion')}"
                  + (f"; {state['stop_reason']}" if state.get("stop_reason") else ""))


@app.command("watch")
def loop_watch(
    ctx: typer.Context,
    min_new_pairs: Annotated[int, typer.Option(min=1, help="Pairs that trigger a training round")] = 32,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between cycles")] = 300.0,
    max_cycles: Annotated[int | None, typer.Option(min=1, help="Stop after this many cycles (default: forever)")
                          ] = None,
    n: Annotated[int | None, typer.Option(min=2, max=64, help="Candidates sampled per prompt (default generation.n)")] = None,
    eval_limit: Annotated[int | None, typer.Option(min=1)] = 32,
    redteam_limit: Annotated[int | None, typer.Option(min=0)] = 12,
    dpo_config: Annotated[Path | None, typer.Option(help="YAML DPO learner config")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Cap on training steps per round")] = None,
) -> None:
    """Keep learning from app traffic: collect pairs on new prompts, train when enough have accumulated."""
    from promptloop.graphs.watch import WatchConfig, watch

    rt = services_of(ctx)
    cfg = WatchConfig(min_new_pairs=min_new_pairs, interval_s=interval, n=n, eval_limit=eval_limit,
                      redteam_limit=redteam_limit, dpo_config=str(dpo_config) if dpo_config else None,
                      max_steps=max_steps)
    try:
        cycles = watch(rt, cfg, log=lambda m: console.print(m, highlight=False), max_cycles=max_cycles)
    except KeyboardInterrupt:
        console.print("stopped")
        return
    trained = [c for c in cycles if c.trained]
    console.print(f"{len(cycles)} cycle(s), {len(trained)} training round(s), "
                  f"{sum(1 for c in trained if c.promoted)} promoted")
