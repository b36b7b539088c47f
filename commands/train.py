"""`promptloop train sft|dpo`: one learner run on the store's data, registering a new rewriter version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptloop.commands.shared import UserError, console, print_json, services_of
from promptloop.progress import training_progress

app = typer.Typer(help="Train a new rewriter version (TRL + LoRA) from the store's data, or a video critic from ratings.",
                  no_args_is_help=True)

_CONFIG = typer.Option("--config", help="YAML learner config (see learners/recipes/); flags override it")
_ROUND = typer.Option("--round", min=0, help="Round whose data to train on (default: the latest with data)")
_SCOPE = typer.Option(help="current = that round only, all = every round up to it")
_PARENT = typer.Option(help="Version to start from: base | champion | NAME")


_TRL_FLAGS = {"allow_extra_args": True, "ignore_unknown_options": True}  # any TRL key as --key value
_DRY_RUN = typer.Option("--dry-run", help="Print the data, parent, version name, steps and config that would "
                                          "train; train nothing")


def _train(ctx: typer.Context, algorithm: str, config: Path | None, as_json: bool, dry_run: bool = False,
           **overrides: object) -> None:
    from promptloop.learners.config import load_config

    rt = services_of(ctx)
    cfg = load_config(algorithm, config, args=list(ctx.args), **overrides)
    if dry_run:
        plan = rt.plan_training(cfg)
        if as_json:
            print_json(plan)
        elif plan["reused"]:
            console.print(f"would train nothing: {plan['name']} is already registered")
        else:
            console.print(f"would train {plan['name']} ({algorithm}) from {plan['parent']} on round {plan['round']} "
                          f"({plan['data_rounds']}): {plan['rows']} rows, {plan['steps']} optimizer steps on "
                          f"{plan['device']}")
            console.print("config: " + ", ".join(f"{k}={v}" for k, v in plan["config"].items()
                                                 if k not in ("algorithm", "lora_target_modules")), highlight=False)
        return
    from promptloop.learners.trainer import is_main_process

    main = is_main_process()  # under accelerate launch only rank 0 talks
    if main:
        run = cfg.run
        console.print(f"training {algorithm} from [bold]{run.parent}[/] on round "
                      f"{run.round_index if run.round_index is not None else '(latest)'} ({run.data_rounds})")
    with training_progress(f"train {algorithm}", enabled=main) as on_step:
        res = rt.train(algorithm, cfg, on_step=on_step)
    if not res.main:
        return
    v = res.version
    summary = {"version": v.name, "parent": v.data_provenance.get("parent"), "algorithm": v.algorithm,
               "adapter": v.adapter_path, "rows": v.data_provenance.get("rows"),
               **{k: v.metrics.get(k) for k in ("global_step", "first_loss", "last_loss", "train_loss", "wall_s",
                                                "device", "last_rewards_accuracies", "last_rewards_margins")},
               "reused": res.reused}
    if as_json:
        print_json(summary)
    else:
        console.print(f"[green]registered[/] {v.name} (candidate): "
                      + ", ".join(f"{k} {val}" for k, val in summary.items() if val is not None and k != "version"))
        console.print("evaluate it with `promptloop eval`, or let `promptloop loop run` promote it")


@app.command("sft", context_settings=_TRL_FLAGS)
def train_sft_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, _CONFIG] = None,
    round_index: Annotated[int | None, _ROUND] = None,
    data_rounds: Annotated[str | None, _SCOPE] = None,
    parent: Annotated[str | None, _PARENT] = None,
    name: Annotated[str | None, typer.Option(help="Version name (default r<round>-sft)")] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    num_train_epochs: Annotated[float | None, typer.Option("--epochs", min=0.0)] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Per-device train batch size")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """SFT on accepted SFT examples (VPO stage 1 / evolution) of a round.

    Any key of TRL's SFTConfig or ModelConfig is a flag too: --lr_scheduler_type cosine --optim adafactor
    --report_to tensorboard ... (after the recipe given by --config, which it overrides)."""
    _train(ctx, "sft", config, as_json, dry_run, round_index=round_index, data_rounds=data_rounds, parent=parent, name=name,
           learning_rate=learning_rate, num_train_epochs=num_train_epochs, max_steps=max_steps,
           per_device_train_batch_size=batch_size)


@app.command("dpo", context_settings=_TRL_FLAGS)
def train_dpo_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, _CONFIG] = None,
    round_index: Annotated[int | None, _ROUND] = None,
    data_rounds: Annotated[str | None, _SCOPE] = None,
    parent: Annotated[str | None, _PARENT] = None,
    name: Annotated[str | None, typer.Option(help="Version name (default r<round>-dpo)")] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    num_train_epochs: Annotated[float | None, typer.Option("--epochs", min=0.0)] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Per-device train batch size")] = None,
    beta: Annotated[float | None, typer.Option(min=0.0, help="DPO temperature")] = None,
    reference: Annotated[str | None, typer.Option(help="The loss's frozen reference: parent (the version "
                                                  "training starts from) or anchor (the SFT version the DPO chain "
                                                  "started from, as RLHFlow's iterative DPO)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """DPO on the preference pairs of a round, against the parent or the anchor SFT version as reference.

    Any key of TRL's DPOConfig or ModelConfig is a flag too: --loss_type ipo --lr_scheduler_type cosine
    --report_to tensorboard ... (after the recipe given by --config, which it overrides)."""
    _train(ctx, "dpo", config, as_json, dry_run, round_index=round_index, data_rounds=data_rounds, parent=parent, name=name,
           learning_rate=learning_rate, num_train_epochs=num_train_epochs, max_steps=max_steps,
           per_device_train_batch_size=batch_size, beta=beta, reference=reference)


@app.command("critic")
def train_critic_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, _CONFIG] = None,
    name: Annotated[str | None, typer.Option(help="Version name (default critic, critic-2, ...)")] = None,
    l2: Annotated[float | None, typer.Option(min=0.0, help="Ridge penalty")] = None,
    holdout: Annotated[float | None, typer.Option(min=0.05, max=0.9, help="Share of rated videos held out")] = None,
    text_features: Annotated[bool | None, typer.Option("--text-features/--no-text-features",
                                                       help="Add the prompt's MiniLM embedding")] = None,
    backend: Annotated[str, typer.Option(help="head: ridge heads over frozen features (CPU); vlm: fine-tune an "
                                         "image-text-to-text model with TRL to write scores and rationales")
                       ] = "head",
    model: Annotated[str | None, typer.Option(help="vlm: local folder or hub id of the VLM")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="vlm: training steps")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Learn a critic from human ratings (LiFT): per-dimension heads over frozen video and prompt features
    (--backend head), or a VLM fine-tuned with TRL that also writes rationales (--backend vlm); measured on
    held-out videos (correlation with people, pairwise accuracy). Use it with video.critic=NAME."""
    from promptloop.learners.config import load_config
    from promptloop.learners.video_critic import run_critic

    rt = services_of(ctx)
    if backend not in ("head", "vlm"):
        raise UserError(f"unknown critic backend '{backend}'; expected head or vlm")
    if backend == "vlm":
        from promptloop.learners.vlm_critic import train_vlm_critic

        vcfg = load_config("vlm_critic", config, name=name, model=model, max_steps=max_steps, holdout=holdout)
        res = train_vlm_critic(rt.engine, rt.settings, vcfg)
        if as_json:
            print_json(res)
        else:
            console.print(f"[green]registered[/] {res['name']} at {res['path']}: loss {res['first_loss']:.3f} -> "
                          f"{res['last_loss']:.3f} in {res['steps']} steps; held-out parse rate "
                          f"{res['parse_rate']:.2f}, " + ", ".join(
                              f"{d} r={m['pearson']}" for d, m in res["dimensions"].items()))
        return
    cfg = load_config("critic", config, name=name, l2=l2, holdout=holdout, text_features=text_features)
    rep = run_critic(rt.engine, rt.settings, cfg, embedder=rt.embedder if cfg.text_features else None)
    if as_json:
        print_json({"version": rep.name, "path": rep.path, "metrics": rep.metrics})
        return
    from rich.table import Table

    from promptloop.commands.shared import out

    t = Table("dimension", "pearson", "spearman", "pairwise acc.", "MAE", "held-out videos",
              title=f"critic {rep.name}: {rep.train_videos} train / {rep.heldout_videos} held-out videos")
    for d, m in rep.metrics["dimensions"].items():
        t.add_row(d, *(("-" if m[k] is None else f"{m[k]:.3f}") for k in ("pearson", "spearman",
                                                                             "pairwise_accuracy", "mae")),
                  str(m["heldout"]))
    out.print(t)
    console.print(f"[green]registered[/] {rep.name} at {rep.path}; judge with it: PROMPTLOOP_VIDEO__CRITIC={rep.name}")


@app.command("rwr")
def train_rwr_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, _CONFIG] = None,
    name: Annotated[str | None, typer.Option(help="Version name (default rwr, rwr-2, ...)")] = None,
    source: Annotated[str | None, typer.Option(help="ratings (people) | judge (stored video totals, e.g. from a "
                                               "critic)")] = None,
    weighting: Annotated[str | None, typer.Option(help="lift | normalized | exp (see learners/rwr.py)")] = None,
    steps: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="LoRA rank")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Reward-weighted fine-tuning of the video model (LiFT): a LoRA on video.model's transformer, trained on
    rated videos with the diffusion loss weighted by reward. Render with it: video.lora=NAME."""
    from promptloop.learners.config import load_config
    from promptloop.learners.rwr import run_rwr

    rt = services_of(ctx)
    cfg = load_config("rwr", config, name=name, source=source, weighting=weighting, steps=steps,
                                learning_rate=learning_rate, rank=rank)
    from promptloop.learners.trainer import is_main_process

    with training_progress(f"train rwr {cfg.name or ''}".strip(), enabled=is_main_process()) as on_step:
        res = run_rwr(rt.engine, rt.settings, rt.renderer(), cfg,
                      on_step=lambda step, total, loss: on_step(step, total, {"loss": loss}))
    if not is_main_process():
        return
    if as_json:
        print_json({k: v for k, v in res.items() if k != "loss_curve"} | {"loss_curve": res["loss_curve"]})
        return
    console.print(f"[green]registered[/] {res['name']} at {res['path']}: {res['samples']} videos, {res['steps']} "
                  f"steps in {res['wall_s']} s, weighted loss on the fixed set {res['eval_loss_before']:.4f} -> "
                  f"{res['eval_loss_after']:.4f}; render with it: PROMPTLOOP_VIDEO__LORA={res['name']}")
