"""Model and dataset cards (huggingface_hub's ``ModelCard`` / ``DatasetCard``): what a pushed adapter or export is,
where it came from and how it scored, in the README.md the Hub shows.

A card is rendered from store rows only, so it can be written again whenever a version gains an evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.config import promptloop_version
from promptloop.store.models import Evaluation, ModelVersion

# (metric, header) of the eval table when the caller passes none: the held-out columns that nothing optimises
DEFAULT_EVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("judge_total", "judge total"), ("intent_recall_at_1", "intent R@1"), ("words", "words"),
    ("repetition", "repetition"), ("fluency", "fluency"), ("unsafe_output_rate", "unsafe out"),
    ("safety_aligned", "safety aligned"), ("benign_kept", "benign kept"))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _kv_table(values: dict[str, Any]) -> str:
    rows = [f"| `{k}` | {json.dumps(v) if isinstance(v, (list, dict)) else _fmt(v)} |" for k, v in values.items()]
    return "\n".join(["| key | value |", "|---|---|", *rows])


def eval_table(evaluations: Sequence[Evaluation], columns: Sequence[tuple[str, str]] = DEFAULT_EVAL_COLUMNS) -> str:
    if not evaluations:
        return "Not evaluated yet (`promptloop eval --systems VERSION`)."
    present = [(k, h) for k, h in columns if any(e.metrics.get(k) is not None for e in evaluations)]
    lines = ["| bench | prompts | " + " | ".join(h for _, h in present) + " |",
             "|---|---|" + "---|" * len(present)]
    for e in evaluations:
        lines.append(f"| {e.bench} | {e.n_prompts} | " + " | ".join(_fmt(e.metrics.get(k)) for k, _ in present) + " |")
    return "\n".join(lines)


def model_card(version: ModelVersion, *, parent: str | None, base_hub_id: str | None,
               evaluations: Sequence[Evaluation] = (), columns: Sequence[tuple[str, str]] = DEFAULT_EVAL_COLUMNS
               ) -> str:
    """The adapter's README.md: base model, parent version, data provenance, eval table, training config."""
    from huggingface_hub import ModelCard, ModelCardData

    m = version.metrics or {}
    data = ModelCardData(base_model=base_hub_id, library_name="peft", pipeline_tag="text-generation",
                         tags=["promptloop", "trl", version.algorithm, "lora", "text-to-video", "prompt-rewriting"])
    training = {k: m.get(k) for k in ("global_step", "first_loss", "last_loss", "train_loss", "wall_s", "device",
                                      "last_rewards_accuracies", "last_rewards_margins", "reference")
                if m.get(k) is not None}
    body = f"""---
{data.to_yaml()}
---

# {version.name}

A promptloop rewriter version: a LoRA adapter ({version.algorithm.upper()}, TRL) on `{version.base_model}` that turns
a short text-to-video request into a detailed video prompt.

- **Base model**: `{base_hub_id or version.base_model}`
- **Parent version**: `{parent or "-"}` (training started from its weights)
- **Algorithm**: {version.algorithm}; status `{version.status}`
- **Written by**: promptloop {promptloop_version()}

## Evaluation

{eval_table(evaluations, columns)}

## Training data (provenance)

{_kv_table(version.data_provenance or {})}

## Training run

{_kv_table(training)}

## Training config

{_kv_table(m.get("config") or {})}

## Use

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base_hub_id or version.base_model}")
model = PeftModel.from_pretrained(base, "<this folder or repo>")
```

or in promptloop: `promptloop rewrite "a cat playing piano" --model-version {version.name}`.
"""
    return str(ModelCard(body))


def dataset_card(kind: str, rows: int, *, rounds: Sequence[int | None], rules: dict[str, int],
                 data_path: str) -> str:
    """The export's README.md: what a row is, where the rows came from, and the TRL command that trains on it."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        tags=["promptloop", "trl", kind, "text-to-video", "prompt-rewriting"],
        task_categories=["text-generation"], size_categories=["n<1K" if rows < 1000 else "1K<n<10K"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_path}]}])
    shape = ('conversational `messages` (system, user request, assistant rewrite)' if kind == "sft" else
             'conversational preference pairs: `prompt` (system + user request), `chosen` and `rejected` '
             '(one assistant turn each), plus `margin`, `rule` and `pair_id`')
    trl_cmd = "sft" if kind == "sft" else "dpo"
    body = f"""---
{data.to_yaml()}
---

# promptloop {kind.upper()} export

{rows} rows of {shape}, exported by promptloop {promptloop_version()} from its store (rounds:
{", ".join(str(r) for r in rounds) or "-"}).

## Provenance

- Rows per pair rule: {", ".join(f"{k} {v}" for k, v in sorted(rules.items())) or "-"}
- Rewrites were generated by promptloop's rewrite graph (rewriter, principle critic, safety guard, judge); the prompt
  side is the rewriter's own template, so a model trained here sees at training what it sees at inference.

## Train on it with TRL's CLI

```bash
trl {trl_cmd} --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct --dataset_name <this folder or repo> \\
    --use_peft --output_dir out
```
"""
    return str(DatasetCard(body))


def version_card(engine: Engine, version: ModelVersion, *, base_hub_id: str | None,
                 columns: Sequence[tuple[str, str]] = DEFAULT_EVAL_COLUMNS) -> str:
    """``model_card`` from the store: the version's parent and every evaluation of it, oldest first."""
    with Session(engine) as s:
        parent = s.get(ModelVersion, version.parent_id) if version.parent_id else None
        evals = list(s.exec(select(Evaluation).where(Evaluation.system == version.name)
                            .order_by(Evaluation.created_at)).all())
    return model_card(version, parent=parent.name if parent else None, base_hub_id=base_hub_id, evaluations=evals,
                      columns=columns)


def write_card(folder: Path, text: str) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
