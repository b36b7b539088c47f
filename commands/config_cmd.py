"""`promptloop config show`: the settings a command would run with, and where each one came from."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from promptloop.commands.shared import UserError, out, print_json, services_of

app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    section: Annotated[str | None, typer.Argument(help="Only this section (e.g. collect, guard) or key prefix")]
    = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every setting's effective value and its source: flag (global flags, --set), env (PROMPTLOOP_*), the TOML
    file, or the default. Secrets print masked."""
    from promptloop.config import settings_sources

    rows = settings_sources(services_of(ctx).settings, ctx.meta.get("promptloop.flags", {}))
    if section:
        every = rows
        rows = [r for r in rows if r[0] == section or r[0].startswith(section.rstrip(".") + ".")]
        if not rows:
            raise UserError(f"no setting '{section}'; sections: "
                            + ", ".join(sorted({k.split(".")[0] for k, _, _ in every})))
    if as_json:
        print_json([{"key": k, "value": v, "source": src} for k, v, src in rows])
        return
    t = Table("setting", "value", "source", header_style="bold")
    for key, value, source in rows:
        t.add_row(key, str(value), source if source == "default" else f"[bold]{source}[/]")
    out.print(t)
