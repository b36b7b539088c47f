"""promptloop: a self-improving prompt rewriter for text-to-video models.

    from promptloop import rewrite
    result = rewrite("a cat playing piano")
    result.final_prompt, result.scores, result.trace_id

Heavy modules load on first use, so `import promptloop` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["rewrite", "rewrite_many", "arewrite", "stream_rewrite", "resume_rewrite", "build_rewrite_graph",
           "Services", "Settings"]

if TYPE_CHECKING:  # pragma: no cover
    from promptloop.api import arewrite, resume_rewrite, rewrite, rewrite_many, stream_rewrite
    from promptloop.config import Settings
    from promptloop.graphs.rewrite import build_rewrite_graph
    from promptloop.services import Services

_LAZY = {
    "rewrite": "promptloop.api", "rewrite_many": "promptloop.api", "arewrite": "promptloop.api",
    "stream_rewrite": "promptloop.api", "resume_rewrite": "promptloop.api",
    "build_rewrite_graph": "promptloop.graphs.rewrite", "Services": "promptloop.services",
    "Settings": "promptloop.config",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":  # pyproject.toml is its one source
        from promptloop.config import promptloop_version

        return promptloop_version()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'promptloop' has no attribute {name!r}")
