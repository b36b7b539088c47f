"""mkdocs hooks: the package made findable by name for the API reference; the CLI reference written from
the Typer app itself and the overview page from the README, so neither can drift from its source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mkdocs.plugins import event_priority


@event_priority(100)  # before mkdocstrings reads its search paths
def on_config(config: dict, **_: object) -> dict:
    """The repository root is the package ``promptloop`` (a package-dir mapping), and the API reference looks
    packages up by folder name: mirror the package's modules, and only those, as build/docs-src/promptloop."""
    root = Path(config["config_file_path"]).parent
    mirror = root / "build" / "docs-src" / "promptloop"
    mirror.mkdir(parents=True, exist_ok=True)
    parts = [p for p in root.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()]
    for part in parts:
        link = mirror / part.name
        if not link.exists():
            link.symlink_to(part, target_is_directory=part.is_dir())
    return config


def on_pre_build(config: dict, **_: object) -> None:
    docs = Path(config["docs_dir"])
    readme = (docs.parent / "README.md").read_text(encoding="utf-8")
    (docs / "index.md").write_text(
        readme.replace("](docs/", "](").replace("[CHANGELOG.md](CHANGELOG.md)", "the repository's `CHANGELOG.md`"),
        encoding="utf-8")
    out = docs / "reference" / "cli.md"
    subprocess.run([sys.executable, "-m", "typer", "promptloop.cli", "utils", "docs", "--name", "promptloop",
                    "--title", "CLI reference", "--output", str(out)], check=True, capture_output=True)
