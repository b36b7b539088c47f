"""What `promptloop push` sends to the Hugging Face Hub: a version's adapter folder (with its model card) or a
`data export --format hf` folder (with its dataset card), through huggingface_hub's ``upload_folder``.

The plan is built first and shown by ``--dry-run``; ``--local-dir`` writes exactly those files into a folder laid
out like the repository, which is how the tests (and anyone without a token) see what would be uploaded.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from promptloop.errors import PromptloopError
from promptloop.store.models import ModelVersion
from promptloop.store.versions import get_version


class PushError(PromptloopError, ValueError):
    """Nothing pushable under that name, a bad repository id, or no token."""


@dataclass
class PushPlan:
    kind: str  # model | dataset: also the Hub's repo_type
    folder: Path
    repo_id: str
    version: ModelVersion | None = None

    def files(self) -> list[tuple[str, int]]:
        """(path in the repository, bytes) of every file that goes up; hidden files and folders stay."""
        out = []
        for p in sorted(self.folder.rglob("*")):
            rel = p.relative_to(self.folder)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                out.append((rel.as_posix(), p.stat().st_size))
        return out


def plan_push(engine: Engine, what: str, repo_id: str) -> PushPlan:
    """``what`` is a version name (its adapter folder) or an exported dataset folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"bad Hub repository id '{repo_id}': {exc}") from None
    if "/" not in repo_id:
        raise PushError(f"bad Hub repository id '{repo_id}': expected OWNER/NAME")
    folder = Path(what)
    if folder.is_dir():
        if (folder / "adapter_config.json").is_file():
            return PushPlan("model", folder, repo_id)
        if (folder / "README.md").is_file() and (folder / "data").is_dir():
            return PushPlan("dataset", folder, repo_id)
        raise PushError(f"{folder} is neither an adapter folder (adapter_config.json) nor a dataset export "
                        "(`promptloop data export ... --format hf`)")
    try:
        version = get_version(engine, what)
    except LookupError as exc:
        raise PushError(f"nothing to push under '{what}': {exc}; or give an exported dataset folder") from None
    if not version.adapter_path or not Path(version.adapter_path).is_dir():
        raise PushError(f"version '{version.name}' has no adapter folder to push (the base model is on the Hub "
                        "already)")
    return PushPlan("model", Path(version.adapter_path), repo_id, version)


def copy_to_folder(plan: PushPlan, local_dir: Path) -> Path:
    """The files of ``plan`` under ``local_dir/<repo_id>``, as the repository would hold them."""
    target = Path(local_dir) / plan.repo_id
    for rel, _ in plan.files():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plan.folder / rel, dest)
    return target


def upload(plan: PushPlan, *, token: str | None, private: bool, endpoint: str | None) -> str:
    """Create the repository if needed and upload the folder in one commit; the commit's URL."""
    if not token:
        raise PushError("no Hugging Face write token is configured (HF_TOKEN, or hub.token in settings); use "
                        "--dry-run / --local-dir")
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token, endpoint=endpoint)
    what = f"version {plan.version.name}" if plan.version else f"{plan.kind} {plan.folder.name}"
    try:
        api.create_repo(plan.repo_id, repo_type=plan.kind, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(plan.folder), repo_id=plan.repo_id, repo_type=plan.kind,
                                 commit_message=f"promptloop: push {what}", ignore_patterns=[".*", "**/.*"])
    except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:  # refused, offline, unreachable endpoint
        raise PushError(f"push to {plan.repo_id} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return str(getattr(info, "commit_url", info))
