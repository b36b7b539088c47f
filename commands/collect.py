"""`promptloop collect sft|pairs|evolve`: training data from the agent graphs (resumable, shareable)."""

from __future__ import annotations

from typing import Annotated

import typer

from promptloop.commands.shared import UserError, console, services_of
from promptloop.progress import collection_progress

app = typer.Typer(help="Collect training data with the agent graphs (resumable).", no_args_is_help=True)


def _collect(ctx: typer.Context, kind: str, split: str, limit: int | None, round_index: int, n: int | None,
             model_version: str, batch_size: int | None, worker: str | None = None,
             concurrency: int | None = None, teacher: str | None = None, dry_run: bool = False,
             **ctx_overrides: object) -> None:
    import time

    from promptloop.graphs.collection import FOUND

    rt = services_of(ctx)
    plan, prompts = rt.collection_prompts(kind, split=split, limit=limit, teacher=teacher)
    if dry_run:
        chunk = batch_size or rt.settings.collect.chunk_size
        console.print(f"would collect {kind} for round {round_index} on {len(prompts)} {split} prompts"
                      + (f" from teacher {teacher}" if teacher else f" sampled by {model_version}")
                      + f", n={n or rt.settings.generation.n}, in {-(-len(prompts) // chunk)} chunk(s) of up to "
                      f"{chunk} (finished chunks are skipped when it runs); nothing was run", highlight=False)
        for p in prompts[:5]:
            console.print(f"  {p.text}", highlight=False)
        if len(prompts) > 5:
            console.print(f"  ... and {len(prompts) - 5} more")
        return
    if plan is not None:
        ctx_overrides["teacher"] = plan
    found_key = FOUND[kind]
    t0 = time.perf_counter()
    with collection_progress(f"collect {kind} r{round_index}", len(prompts), found_key) as on_chunk:
        report = rt.collect(kind, split=split, limit=limit, round_index=round_index, n=n,
                            model_version=model_version, batch_size=batch_size, prompts=prompts, on_chunk=on_chunk,
                            worker=worker, max_concurrency=concurrency, **ctx_overrides)
    if worker:
        console.print(f"worker {worker}: ", end="")
    console.print(f"{report.prompts} prompts in {report.chunks} chunk(s) ({report.skipped_chunks} already done, "
                  f"{report.resumed_chunks} resumed) in {time.perf_counter() - t0:.1f} s: "
                  + ", ".join(f"{k} {v}" for k, v in report.stored.items()))


_SPLIT = typer.Option(help="Prompt split to collect from")
_LIMIT = typer.Option(min=1, help="At most this many prompts")
_ROUND = typer.Option("--round", min=0, help="Round index the rows belong to")
_VERSION = typer.Option(help="Rewriter version that samples: base | champion | NAME")
_BATCH = typer.Option(min=1, help="Prompts per checkpointed graph run (default collect.chunk_size)")
_PART = typer.Option(min=1, help="Prompts per fanned-out part: one batched pass of the pipeline, model calls "
                     "batched across them (default collect.part_size)")
_CONCURRENCY = typer.Option(min=1, max=256, help="Parts in flight at once, LangGraph max_concurrency (default "
                            "collect.max_concurrency; raise it for a served backend that batches requests)")
_TEACHER = typer.Option(help="Collect from a teacher: a recorded set (`promptloop teacher import`) or, by any other "
                        "name, the served backends.teacher; SFT rows get source teacher:NAME")
_DRY_RUN = typer.Option("--dry-run", help="Print the prompts, chunks and sampler it would use; run nothing")
_WORKER = typer.Option(help="Share this collection with other workers on the same store (each started with the "
                       "same arguments and its own name): prompts are claimed in chunks, none processed twice")


@app.command("sft")
def collect_sft(
    ctx: typer.Context,
    split: Annotated[str, _SPLIT] = "train",
    limit: Annotated[int | None, _LIMIT] = None,
    round_index: Annotated[int, _ROUND] = 0,
    n: Annotated[int | None, typer.Option(min=1, max=64, help="Candidates sampled per prompt (default generation.n)")] = None,
    model_version: Annotated[str, _VERSION] = "base",
    batch_size: Annotated[int | None, _BATCH] = None,
    part_size: Annotated[int | None, _PART] = None,
    concurrency: Annotated[int | None, _CONCURRENCY] = None,
    max_refine_steps: Annotated[int | None, typer.Option(min=0, max=10)] = None,
    worker: Annotated[str | None, _WORKER] = None,
    teacher: Annotated[str | None, _TEACHER] = None,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """VPO stage 1: rewrite, critique, refine until the principles pass, store SFT examples (and rejects).

    With --teacher the candidates are the teacher's rewrites (recorded, or n samples of the served teacher)
    instead of the rewriter's; they go through the same critic, refinement, guard and judge."""
    _collect(ctx, "sft", split, limit, round_index, n, model_version, batch_size, worker, concurrency, teacher,
             dry_run, part_size=part_size, max_refine_steps=max_refine_steps)


@app.command("evolve")
def collect_evolve(
    ctx: typer.Context,
    split: Annotated[str, _SPLIT] = "train",
    limit: Annotated[int | None, _LIMIT] = None,
    round_index: Annotated[int, _ROUND] = 0,
    model_version: Annotated[str, _VERSION] = "base",
    batch_size: Annotated[int | None, _BATCH] = None,
    part_size: Annotated[int | None, _PART] = None,
    concurrency: Annotated[int | None, _CONCURRENCY] = None,
    generations: Annotated[int, typer.Option(min=1, max=50, help="Generations (Prompt-A-Video uses about 8)")] = 3,
    population: Annotated[int, typer.Option(min=2, max=64, help="Individuals kept per prompt (elitism)")] = 4,
    offspring: Annotated[int, typer.Option(min=1, max=64, help="New prompts written per generation")] = 4,
    keep_best: Annotated[int, typer.Option(min=1, help="Best individuals per prompt that become SFT examples")] = 1,
    worker: Annotated[str | None, _WORKER] = None,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """Prompt-A-Video stage 1: evolve rewrites by LLM mutation/crossover with reward fitness; top ones to SFT."""
    _collect(ctx, "evolve", split, limit, round_index, population, model_version, batch_size, worker, concurrency,
             dry_run=dry_run, part_size=part_size, generations=generations, population=population, offspring=offspring, keep_best=keep_best)


@app.command("pairs")
def collect_pairs(
    ctx: typer.Context,
    split: Annotated[str, _SPLIT] = "train",
    limit: Annotated[int | None, _LIMIT] = None,
    round_index: Annotated[int, _ROUND] = 1,
    n: Annotated[int | None, typer.Option(min=2, max=64, help="Candidates sampled per prompt (default generation.n)")] = None,
    model_version: Annotated[str, _VERSION] = "base",
    batch_size: Annotated[int | None, _BATCH] = None,
    part_size: Annotated[int | None, _PART] = None,
    concurrency: Annotated[int | None, _CONCURRENCY] = None,
    margin: Annotated[float, typer.Option(min=0.0, help="Minimum reward-total gap between chosen and rejected")] = 0.1,
    rule: Annotated[str | None, typer.Option(help="margin | pareto | gated (see graphs/collect_pairs.py); "
                                             "teacher with --teacher [default: margin]")] = None,
    pairs_per_prompt: Annotated[int, typer.Option(min=1)] = 1,
    worker: Annotated[str | None, _WORKER] = None,
    teacher: Annotated[str | None, typer.Option(help="The chosen side is this teacher's rewrite (a recorded set, or "
                                                "by any other name the served backends.teacher), the rejected side "
                                                "the rewriter's own sample, when the judge agrees")] = None,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Render every candidate with the video model "
                                        "(video.model) and add video-level feedback")] = False,
    seeds: Annotated[int | None, typer.Option(min=1, max=16, help="Renders per candidate with --video "
                                              "(default video.seeds)")] = None,
    video_share: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Video total's weight in the "
                                                      "combined reward (default video.share)")] = None,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """VPO stage 2: sample n candidates, score them, store preference pairs (chosen, rejected, margin).

    With --video each candidate is rendered (seeds per candidate), scored on its videos against the user's
    prompt, and pairs are labelled by the feedback that supports them (text / video / both)."""
    from promptloop.graphs.collect_pairs import RULES

    rule = rule or ("teacher" if teacher else "margin")
    if rule not in RULES:
        raise UserError(f"unknown pair rule '{rule}'; expected one of {', '.join(RULES)}")
    if (rule == "teacher") != bool(teacher):
        raise UserError("the teacher rule and --teacher go together")
    if not video and (seeds is not None or video_share is not None):
        raise UserError("--seeds and --video-share only apply with --video")
    extra = dict(video=True, video_seeds=seeds, video_share=video_share) if video else {}
    _collect(ctx, "pairs", split, limit, round_index, n, model_version, batch_size, worker, concurrency, teacher,
             dry_run, part_size=part_size, max_refine_steps=0, margin=margin, rule=rule, max_pairs_per_prompt=pairs_per_prompt, **extra)


