"""`promptloop push`: a version's adapter (with its model card) or an exported dataset (with its dataset card) to
the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptloop.commands.shared import console, print_json, services_of


def push_cmd(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(metavar="VERSION|DATASET", help="A model version name (its LoRA adapter "
                                        "folder) or a folder written by `data export ... --format hf`")],
    repo: Annotated[str, typer.Option("--repo", help="Hub repository OWNER/NAME (created if missing)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded; upload nothing")] = False,
    local_dir: Annotated[Path | None, typer.Option(help="Write the files into LOCAL_DIR/OWNER/NAME instead of "
                                                   "uploading (no token needed)")] = None,
    private: Annotated[bool | None, typer.Option("--private/--public", help="Visibility of a new repository "
                                                 "(default: hub.private, true)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Push to the Hub with the token in HF_TOKEN or hub.token. A version's model card is written again first,
    so it carries every evaluation stored for the version."""
    from promptloop.evaluation.runner import refresh_card
    from promptloop.store.publish import copy_to_folder, plan_push, upload

    rt = services_of(ctx)
    plan = plan_push(rt.engine, what, repo)
    if plan.version is not None:
        refresh_card(rt.engine, plan.version, rt.settings.base_model)
    files = plan.files()
    summary = {"kind": plan.kind, "repo": plan.repo_id, "folder": str(plan.folder),
               "files": [{"path": p, "bytes": n} for p, n in files], "uploaded": False}
    hub = rt.settings.hub
    if dry_run:
        pass
    elif local_dir is not None:
        summary["local_dir"] = str(copy_to_folder(plan, local_dir))
    else:
        summary["url"] = upload(plan, token=hub.write_token(), private=hub.private if private is None else private,
                                endpoint=hub.endpoint)
        summary["uploaded"] = True
    if as_json:
        print_json(summary)
        return
    verb = ("would push" if dry_run else f"wrote to {summary['local_dir']}" if local_dir else "pushed")
    console.print(f"{verb} {plan.kind} {plan.folder} -> {plan.repo_id} ({len(files)} files, "
                  f"{sum(n for _, n in files) / 1e6:.1f} MB)")
    for p, n in files:
        console.print(f"  {p}  {n:,} bytes", highlight=False)
    if summary.get("url"):
        console.print(f"  {summary['url']}")
