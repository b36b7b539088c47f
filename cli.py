"""The `promptloop` command: assembles the Typer app from the groups in commands/.

Global flags (--home, --database-url, --config, ...) override promptloop.toml
and PROMPTLOOP_* variables; every sub-command gets the resulting Settings
through one Services (the composition root). Errors a user can fix print one
red line and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape as rich_escape

from promptloop.commands import collect, config_cmd, data, prompts, rewrite, setup, teacher, traces
from promptloop.commands.evaluate import eval_cmd
from promptloop.commands.loop import app as loop_app
from promptloop.commands.push import push_cmd
from promptloop.commands.ratings import app as ratings_app
from promptloop.commands.shared import console, quiet_libraries
from promptloop.commands.train import app as train_app
from promptloop.commands.ui import ui_cmd
from promptloop.commands.video import judge_cmd, render_cmd
from promptloop.config import Settings, flag_values, promptloop_version
from promptloop.errors import describe
from promptloop.services import Services

app = typer.Typer(help="promptloop: a self-improving prompt rewriter for text-to-video models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(setup.db_app, name="db")
app.add_typer(setup.models_app, name="models")
app.add_typer(config_cmd.app, name="config")
app.add_typer(prompts.app, name="prompts")
app.add_typer(data.app, name="data")
app.add_typer(traces.app, name="traces")
app.add_typer(collect.app, name="collect")
app.add_typer(teacher.app, name="teacher")
app.add_typer(train_app, name="train")
app.add_typer(loop_app, name="loop")
app.add_typer(ratings_app, name="ratings")
app.command("eval")(eval_cmd)
app.command("ui")(ui_cmd)
app.command("render")(render_cmd)
app.command("judge")(judge_cmd)
app.command("push")(push_cmd)
app.command()(setup.init)
app.command()(rewrite.rewrite)
app.command()(rewrite.guard)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("torch", "transformers", "trl", "peft", "langgraph", "vllm", "diffusers"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    print(f"promptloop {promptloop_version()} ({', '.join(parts)})")
    raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Folder for database, models, adapters, videos, reports "
                                                   "(env PROMPTLOOP_HOME; default ~/.promptloop)")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (env PROMPTLOOP_DATABASE_URL; "
                                                          "default sqlite file in home)")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file (env PROMPTLOOP_CONFIG; "
                                                     "default ./promptloop.toml)")] = None,
    base_model: Annotated[str | None, typer.Option(help="Rewriter base: embedded name, hub id, folder or .gguf")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | mps")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the libraries' own load bars, logs and "
                                                            "deprecation warnings (hidden by default)")] = False,
    assignments: Annotated[list[str] | None, typer.Option(
        "--set", metavar="SECTION.FIELD=VALUE",
        help="Override any setting for this command, e.g. --set critic.llm_max_new_tokens=48 or "
             "--set generation.n=2 (repeatable; the value is read as JSON, else as text)")] = None,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print promptloop's version and the stack's, then exit")] = False,
) -> None:
    if not verbose:
        quiet_libraries()
    try:
        flags = flag_values(home=home, database_url=database_url, config_file=config, base_model=base_model,
                            device=device, seed=seed, assignments=assignments or ())
        settings = Settings(**flags)
    except (ValueError, FileNotFoundError) as exc:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]error:[/] {rich_escape(describe(exc) or str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    # Only `init` and `db upgrade` create a database: a mistyped URL must not silently start an empty store.
    ctx.meta["promptloop.flags"] = flags  # `config show` names these as the flag-given settings
    ctx.obj = Services(settings, create_store=ctx.invoked_subcommand == "init")


def main(argv: list[str] | None = None) -> None:
    """Run the app; every failure a user can act on becomes one redacted line and exit 2 (errors.describe)."""
    try:
        app(args=argv, standalone_mode=True)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: what finished is stored; run the command again to resume")
        sys.exit(130)
    except Exception as exc:
        line = describe(exc)
        if line is None:
            raise
        console.print(f"[red]error:[/] {rich_escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
