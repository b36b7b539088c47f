"""What every command module shares: the consoles, the Services from the context, JSON output."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

from promptloop.errors import PromptloopError
from promptloop.services import Services

console = Console(stderr=True)
# Tables are wide; when stdout is a file or a pipe, do not squeeze them into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)


class UserError(PromptloopError):
    """Bad input or a missing prerequisite: reported in one line, exit code 2."""


LIBRARIES = r"(torch|transformers|trl|peft|datasets|accelerate|diffusers|sentence_transformers|huggingface_hub|gguf)"


def quiet_libraries() -> None:
    """Keep the libraries' load bars, advisory logs and deprecation warnings out of the commands' output.

    The commands draw their own progress (rich, with counts and ETA); a
    "Loading weights" bar or a FutureWarning between those lines tells a user
    nothing they can act on. Runs before any library is imported (the
    commands import them lazily), because the libraries read these variables
    at import. `promptloop --verbose` leaves everything as the libraries have it.
    """
    import logging
    import os
    import warnings

    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES + r"(\.|$)")
    for name in ("transformers", "trl", "peft", "datasets", "accelerate", "diffusers", "sentence_transformers",
                 "huggingface_hub", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # a library already imported (the CLI run in-process, from a test or an app) read the variables too early
    for module, switch in (("transformers", "utils.logging.disable_progress_bar"),
                           ("datasets", "disable_progress_bars"), ("huggingface_hub", "utils.disable_progress_bars")):
        if module in sys.modules:
            target = sys.modules[module]
            for part in switch.split("."):
                target = getattr(target, part)
            target()


def services_of(ctx: typer.Context) -> Services:
    return ctx.obj


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


TOKEN_HELP = ("Access token the pages require (bearer header or /login); default web.token. Needed beyond "
              "loopback: generated and printed when unset")


def serve_web_app(ctx: typer.Context, module: str, banner: str, *, host: str, token: str | None,
                  **kwargs: object) -> None:
    """Start one of promptloop's local web apps (``promptloop.ui.<module>.serve``) on the store of this run.

    Beyond loopback the app requires an access token; without one configured, one is generated and shown
    with a warning, so a page bound to 0.0.0.0 is never open to whoever reaches the port.
    """
    import importlib

    try:
        serve = importlib.import_module(f"promptloop.ui.{module}").serve
        from promptloop.ui.security import resolve_token
    except ImportError as exc:
        raise UserError(f"the web pages need the ui extra: pip install 'promptloop[ui]' ({exc})") from exc
    rt = services_of(ctx)
    configured = token or (rt.settings.web.token.get_secret_value() if rt.settings.web.token else None)
    required, warning = resolve_token(configured, host)
    engine = rt.engine
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(banner + (" (access token required)" if required else ""))
    serve(engine, rt.settings, host=host, token=required, **kwargs)
