"""The rewriter: a short user prompt in, n candidate video prompts out.

The instruction lives in ``templates/`` and is the same text at inference and
in exported training data (``messages_for``), so fine-tuning teaches the
model the exact task it is later asked to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources

from pydantic import BaseModel, Field

from promptloop.agents.llm.base import ChatModel, Message, SamplingParams
from promptloop.config import RewriteSettings, default_of

_META_PREFIX = re.compile(
    r"^\s*(?:(?:sure|okay|ok|certainly|of course)[,!. ]+)?"
    r"(?:here(?:'s| is| are)\s+(?:the|a|an|your|my)?\s*(?:rewritten|improved|enhanced|detailed|final|new)?\s*"
    r"(?:video\s+)?(?:prompt|description|version|caption)s?[^:\n]*:|(?:video\s+)?prompt\s*:|"
    r"(?:rewritten|enhanced|improved)\s+prompt\s*:)\s*",
    re.IGNORECASE,
)


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def template(name: str) -> str:
    return resources.files("promptloop.agents").joinpath("templates", name).read_text(encoding="utf-8")


def _strip_meta(text: str) -> str:
    """``text`` without leading meta-text; its end is kept as it is (a blank line there ends a paragraph)."""
    text = text.lstrip()
    for _ in range(2):
        text = _META_PREFIX.sub("", text, count=1).lstrip()
    return text


def _clean_paragraph(paragraph: str) -> str:
    text = paragraph.strip().strip('"“”\'`').strip()
    text = re.sub(r"^\*+|\*+$", "", text).strip()
    return " ".join(text.split())


def clean_rewrite(text: str) -> str:
    """Strip meta-text and wrapping that models add around the prompt itself: its first paragraph that has
    any content, unquoted and on one line."""
    for paragraph in _PARAGRAPH_BREAK.split(_strip_meta(text)):
        cleaned = _clean_paragraph(paragraph)
        if cleaned:
            return cleaned
    return ""


def rewrite_complete(text: str) -> bool:
    """Nothing written after ``text`` can change ``clean_rewrite``'s result: a paragraph with content has ended.

    A third of the base model's samples write on after a blank line (notes,
    a second version) that ``clean_rewrite`` drops. A decoder that asks this
    ends such a row at the blank line: on 24 train-split prompts x 4 samples,
    109 decoded tokens a sample became 78, and a call's longest sample (what
    a batched call waits for) 156 became 137.
    """
    *done, _ = _PARAGRAPH_BREAK.split(_strip_meta(text))
    return any(_clean_paragraph(p) for p in done)


class RewriteRequest(BaseModel):
    prompt: str = Field(min_length=1)
    n: int = Field(1, ge=1, le=64)


class RewriteResult(BaseModel):
    prompt: str
    candidates: list[str]


class Rewriter:
    def __init__(self, model: ChatModel, *, min_words: int = default_of(RewriteSettings, "target_words_min"),
                 max_words: int = default_of(RewriteSettings, "target_words_max"),
                 language: str = "the same language as the request", adapter: str | None = None):
        self.model = model
        self.min_words, self.max_words = min_words, max_words
        self.language = language
        self.adapter = adapter
        self._system = template("rewrite_system.txt")
        self._user = template("rewrite_user.txt")

    def messages_for(self, prompt: str) -> list[Message]:
        """The conversation the model sees. A flagged request reaches it already cut to its benign core (the
        sanitiser): a 135M model told "leave the unsafe part out" kept it in 75% of the time."""
        system = self._system.format(min_words=self.min_words, max_words=self.max_words, language=self.language)
        user = self._user.format(prompt=prompt.strip())
        return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]

    def rewrite(self, prompts: Sequence[str], params: SamplingParams, *,
                adapter: str | None = None) -> list[RewriteResult]:
        """All prompts go to the model in one batched call; ``adapter`` overrides the default version."""
        requests = [RewriteRequest(prompt=p, n=params.n) for p in prompts]
        outputs = self.model.generate([self.messages_for(r.prompt) for r in requests],
                                      params.model_copy(update={"until": rewrite_complete}),
                                      adapter=adapter if adapter is not None else self.adapter)
        return [RewriteResult(prompt=r.prompt, candidates=[clean_rewrite(o) for o in outs])
                for r, outs in zip(requests, outputs, strict=True)]
