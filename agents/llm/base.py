"""The ChatModel contract every backend implements.

It is batched by design: agents hand over many conversations at once and get
``n`` completions for each, so a backend can fill a GPU batch, a vLLM
scheduler or an HTTP connection pool instead of being called in a loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypedDict

from pydantic import Field

from promptloop.config import GenerationSettings, SamplingControls, default_of


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


Conversation = Sequence[Message]


class SamplingParams(SamplingControls):
    """One call's sampling: the agent's controls (Settings.sampling) plus what the call decides."""

    n: int = Field(1, ge=1, le=64, description="completions per conversation")
    max_new_tokens: int = Field(default_of(GenerationSettings, "max_new_tokens"), ge=1, le=8192)
    temperature: float = Field(default_of(GenerationSettings, "temperature"), ge=0.0, le=5.0, description="0 = greedy")
    top_p: float = Field(default_of(GenerationSettings, "top_p"), gt=0.0, le=1.0)
    seed: int | None = None
    json_schema: dict | None = Field(None, description="ask for JSON of this schema where the backend can "
                                     "enforce it (OpenAI-compatible response_format); a hint, never a guarantee")
    until: Callable[[str], bool] | None = Field(None, exclude=True, description="the caller's test that a "
                                                "completion's text so far is all of it the caller will use: the "
                                                "in-process backend ends the row there (checked at line breaks); "
                                                "served backends decode on, and the caller cuts the text anyway")

    @classmethod
    def of(cls, controls: SamplingControls | None, **call: Any) -> SamplingParams:
        """An agent's controls with this call's fields on top."""
        return cls(**{**(controls.model_dump() if controls is not None else {}), **call})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string, as OpenAI's API returns it (transformers serve keeps the string)."""
    for s in stop:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    return text


class ChatModel(ABC):
    """Many conversations in, ``n`` completions each out, in input order."""

    name: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every backend's ``generate`` emits an OpenTelemetry span (agents/llm/telemetry.py)."""
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("generate")
        if fn is not None and not getattr(fn, "__isabstractmethod__", False) and not getattr(
                fn, "__promptloop_traced__", False):
            from promptloop.agents.llm.telemetry import traced

            cls.generate = traced(fn)  # type: ignore[method-assign]

    @abstractmethod
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams, *,
                 adapter: str | None = None) -> list[list[str]]:
        """``adapter`` names a loaded LoRA adapter (a rewriter version); None means the base model."""

    def _already_bound(self, name: str, path: str, bound: str | None) -> bool:
        """True if ``name`` is loaded from ``path`` already; an error if it is bound to another path.

        Every rewriter version needs its own adapter name: backends cache adapters
        by name (vLLM also by id), so reusing one would serve the old weights.
        """
        if bound is None:
            return False
        if bound == path:
            return True
        raise ValueError(f"adapter name '{name}' is already bound to {bound}; every rewriter version needs its own name")

    def chat(self, messages: Conversation, params: SamplingParams | None = None, *,
             adapter: str | None = None) -> list[str]:
        return self.generate([messages], params or SamplingParams(), adapter=adapter)[0]
