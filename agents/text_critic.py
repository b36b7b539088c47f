"""The principle critic: does a candidate keep the three principles, and how to fix it if not.

Deterministic checks (intent similarity, coverage of the user's words and
numbers, length window, repetition, meta-text, the guard's verdict) give every
principle a score that does not depend on a model's mood. An LLM critique,
asked for as JSON and validated with pydantic, is blended in with a
configurable weight; a malformed answer is re-asked, then dropped, and the
critique records that it fell back to the deterministic checks.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field, ValidationError

from promptloop.agents import text_checks as tc
from promptloop.agents.llm.base import ChatModel, SamplingParams
from promptloop.agents.rewriter import clean_rewrite, rewrite_complete, template
from promptloop.agents.safety.guard import SafetyGuard, Verdict, parse_json_model
from promptloop.config import CriticSettings, RewriteSettings, SamplingControls, default_of

if TYPE_CHECKING:
    from promptloop.agents.embedder import Embedder


class Thresholds(BaseModel):
    harmless: float = default_of(CriticSettings, "harmless_threshold")
    accurate: float = default_of(CriticSettings, "accurate_threshold")
    helpful: float = default_of(CriticSettings, "helpful_threshold")


class LLMCritique(BaseModel):
    """The three principle scores with issues and a fix: what the LLM must return (extra keys ignored)."""

    harmless: float = Field(ge=0, le=1)
    accurate: float = Field(ge=0, le=1)
    helpful: float = Field(ge=0, le=1)
    issues: list[str] = Field(default_factory=list)
    suggestion: str = ""


class Critique(LLMCritique):
    """The critic's answer: the principle scores plus how they were measured."""

    checks: dict[str, float] = Field(default_factory=dict, description="the deterministic measurements")
    llm_used: bool = False
    fallback: bool = Field(False, description="the LLM critique was malformed; deterministic checks only")
    critic_id: str = "principle-critic-v1"
    degenerate: list[str] = Field(default_factory=list, description="why the text is degenerate (looping, "
                                  "meta-text, cut off, empty, far too long); never the chosen side of a pair")

    def passes(self, t: Thresholds) -> bool:
        return self.harmless >= t.harmless and self.accurate >= t.accurate and self.helpful >= t.helpful

    def failing(self, t: Thresholds) -> list[str]:
        return [p for p in ("harmless", "accurate", "helpful") if getattr(self, p) < getattr(t, p)]


class CapabilityMemory(Protocol):
    """Where the breaker's verdict on a model outlives the process (store.capabilities.CapabilityRecord)."""

    def verdict(self) -> bool | None: ...

    def remember(self, *, asked: int, valid: int, capable: bool) -> None: ...


class TextCritic:
    def __init__(self, embedder: Embedder, guard: SafetyGuard, llm: ChatModel | None = None, *,
                 min_words: int = default_of(RewriteSettings, "target_words_min"),
                 max_words: int = default_of(RewriteSettings, "target_words_max"),
                 llm_weight: float = default_of(CriticSettings, "llm_weight"),
                 llm_retries: int = default_of(CriticSettings, "llm_retries"),
                 breaker_window: int = default_of(CriticSettings, "llm_breaker_window"),
                 breaker_min_valid: float = default_of(CriticSettings, "llm_breaker_min_valid"),
                 controls: SamplingControls | None = None,
                 degenerate_repetition: float = default_of(CriticSettings, "degenerate_repetition"),
                 degenerate_length: float = default_of(CriticSettings, "degenerate_length"),
                 refiner: Callable[[], ChatModel] | None = None,
                 llm_max_new_tokens: int = default_of(CriticSettings, "llm_max_new_tokens"),
                 memory: CapabilityMemory | None = None):
        self.embedder = embedder
        self.llm_max_new_tokens = llm_max_new_tokens
        self.refiner = refiner  # the model refinements come from when ``llm`` is None (built on first use)
        self.controls = controls  # the critic's decoding controls (Settings.sampling.critic)
        self.degenerate_repetition, self.degenerate_length = degenerate_repetition, degenerate_length
        self.guard = guard
        self.llm = llm
        self.min_words, self.max_words = min_words, max_words
        self.llm_weight = llm_weight if llm is not None else 0.0
        self.llm_retries = llm_retries
        # Circuit breaker: a model that rarely returns valid JSON (the 135M default) stops being asked once
        # fewer than ``breaker_min_valid`` of its last ``breaker_window`` answers parsed, instead of
        # doubling every critique's latency for noise. A window of 0 never stops asking.
        self.breaker_window = breaker_window
        self.breaker_min_valid = breaker_min_valid
        self.recent: deque[bool] = deque(maxlen=max(1, breaker_window))
        self._probe_lock = threading.Lock()  # collection parts in flight share this critic: one probe at a time
        # The breaker's first verdict is remembered (``memory``, per model in the store) and read back by the next
        # process, which then starts with the breaker as it was left instead of probing again.
        self.memory = memory
        self._recalled = self._remembered = memory is None
        self._critique_tmpl = template("critique.txt")
        self._refine_tmpl = template("refine.txt")

    # --- critique -----------------------------------------------------------------
    def critique(self, user_prompt: str, candidate: str) -> Critique:
        return self.critique_many([(user_prompt, candidate)])[0]

    def critique_many(self, pairs: Sequence[tuple[str, str]], verdicts: Sequence[Verdict] | None = None
                      ) -> list[Critique]:
        """Batched: one embedding pass, one guard pass and one LLM call (plus retries) for all pairs."""
        pairs = list(pairs)
        if not pairs:
            return []
        sims = self.embedder.pairwise([u for u, _ in pairs], [c for _, c in pairs])
        verdicts = list(verdicts) if verdicts is not None else self.guard.check_many([c for _, c in pairs])
        llm = self._llm_critiques(pairs) if self.llm is not None and self.llm_weight > 0 else [None] * len(pairs)
        out = []
        for (user, cand), sim, verdict, answer in zip(pairs, sims, verdicts, llm, strict=True):
            crit = self._deterministic(user, cand, float(sim), verdict)
            if self.llm is not None and self.llm_weight > 0:
                if answer is None:
                    crit.fallback = True
                    crit.issues.append("LLM critic off: too few valid answers recently; deterministic checks only"
                                       if self.breaker_open else
                                       "LLM critique malformed after retries: deterministic checks only")
                else:
                    w = self.llm_weight
                    crit.harmless = min(crit.harmless, (1 - w) * crit.harmless + w * answer.harmless)
                    crit.accurate = (1 - w) * crit.accurate + w * answer.accurate
                    crit.helpful = (1 - w) * crit.helpful + w * answer.helpful
                    crit.issues += [f"llm: {i}" for i in answer.issues[:3] if isinstance(i, str) and i.strip()]
                    crit.suggestion = answer.suggestion.strip() or crit.suggestion
                    crit.llm_used = True
            out.append(crit)
        return out

    def _deterministic(self, user: str, cand: str, sim: float, verdict: Verdict) -> Critique:
        cov, missing = tc.coverage(user, cand)
        counts, missing_n = tc.counts_kept(user, cand)
        length = tc.length_fit(cand, self.min_words, self.max_words)
        rep = tc.repetition_rate(cand)
        aspects, hits = tc.aspect_coverage(user, cand)
        meta = tc.has_meta_text(cand)
        top_harm = max((v.score for v in verdict.categories.values()), default=0.0)
        intent = min(1.0, max(0.0, (sim - 0.2) / 0.6))  # cosine 0.2 -> 0, 0.8 -> 1

        harmless = 0.0 if verdict.action == "block" else (1.0 - top_harm if not verdict.safe else
                                                          max(0.8, 1.0 - top_harm))
        accurate = 0.5 * intent + 0.4 * cov + 0.1 * counts
        helpful = max(0.0, 0.45 * length + 0.35 * aspects + 0.2 * (1 - min(1.0, 2 * rep)) - (0.2 if meta else 0))
        issues, fixes = [], []
        if not verdict.safe:
            issues.append(f"unsafe: {verdict.reason}")
            fixes.append("remove the unsafe elements and keep only the safe part of the request")
        if missing:
            issues.append(f"drops the user's words: {', '.join(missing[:6])}")
            fixes.append(f"mention {', '.join(missing[:6])} as the user asked")
        if missing_n:
            issues.append(f"changes the requested count(s): {missing_n}")
            fixes.append(f"keep the exact number(s) {missing_n}")
        if intent < 0.5:
            issues.append(f"low intent similarity ({sim:.2f})")
        if length < 1:
            n = len(tc.words(cand))
            issues.append(f"{n} words, outside {self.min_words}-{self.max_words}")
            fixes.append("add visual detail" if n < self.min_words else "cut it down to the essentials")
        if rep > 0.1:
            issues.append(f"repetitive ({rep:.0%} repeated trigrams)")
            fixes.append("do not repeat phrases")
        if meta:
            issues.append("contains meta-text instead of only the prompt")
            fixes.append("output only the prompt itself")
        degenerate = tc.degeneracy(cand, max_words=self.max_words, repetition=self.degenerate_repetition,
                                   length_factor=self.degenerate_length)
        if degenerate:
            issues.append(f"degenerate: {', '.join(degenerate)}")
        missing_aspects = [a for a, ok in hits.items() if not ok and a != "subject"]
        if missing_aspects:
            fixes.append(f"describe the {', '.join(missing_aspects)}")
        return Critique(
            harmless=round(harmless, 4), accurate=round(accurate, 4), helpful=round(helpful, 4), issues=issues,
            degenerate=degenerate,
            suggestion="; ".join(fixes),
            checks={"intent_similarity": round(sim, 4), "coverage": round(cov, 4), "counts": counts,
                    "length_fit": round(length, 4), "repetition": round(rep, 4), "aspect_coverage": round(aspects, 4),
                    "meta_text": float(meta), "max_harm": round(top_harm, 4)},
        )

    @property
    def breaker_open(self) -> bool:
        return (self.breaker_window > 0 and len(self.recent) == self.breaker_window
                and sum(self.recent) / self.breaker_window < self.breaker_min_valid)

    @property
    def probing(self) -> bool:
        """The next LLM critiques still measure whether the model can critique: asked, with no verdict yet
        (none remembered in the store, the breaker window not yet full)."""
        if self.llm is None or self.llm_weight <= 0 or self.breaker_window <= 0:
            return False
        self._recall()
        return len(self.recent) < self.breaker_window

    def _llm_critiques(self, pairs: list[tuple[str, str]]) -> list[LLMCritique | None]:
        """Ask the LLM for every pair, probing with a breaker window's worth first while the breaker has no verdict.

        Collection hands the critic a whole part (128 candidates) at once;
        with a model that rarely writes valid JSON (the embedded 135M parses
        about one critique in five) the breaker would only learn so after
        paying for all of them and their retries, about 70 % of a default
        64-prompt pairs collection. The probe costs one small call for a
        capable model and saves the rest for an incapable one.
        """
        answers: list[LLMCritique | None] = [None] * len(pairs)
        todo = list(range(len(pairs)))
        self._recall()
        while todo and not self.breaker_open:
            with self._probe_lock:  # a part that waited here sees the verdict of the probe before it
                unsure = self.breaker_window - len(self.recent) if self.breaker_window > 0 else 0
                if unsure > 0 and not self.breaker_open:
                    batch, todo = todo[:unsure], todo[unsure:]
                    self._ask(pairs, batch, answers)
                    continue
            if not self.breaker_open:
                self._ask(pairs, todo, answers)
            break
        return answers

    def _ask(self, pairs: list[tuple[str, str]], todo: list[int], answers: list[LLMCritique | None]) -> None:
        """One greedy ask for the pairs at ``todo``, then sampled re-asks for those that did not parse."""
        asked = list(todo)
        for attempt in range(self.llm_retries + 1):
            if not todo:
                break
            convs = [[{"role": "user", "content": self._critique_tmpl.format(prompt=pairs[i][0], candidate=pairs[i][1])}]
                     for i in todo]
            params = SamplingParams.of(self.controls, n=1, max_new_tokens=self.llm_max_new_tokens,
                                       temperature=0.0 if attempt == 0 else 0.7, seed=attempt,
                                       json_schema=LLMCritique.model_json_schema())
            outs = self.llm.generate(convs, params)
            still = []
            for i, o in zip(todo, outs, strict=True):
                parsed = parse_critique(o[0])
                if parsed is None:
                    still.append(i)
                else:
                    answers[i] = parsed
            todo = still
        self.recent.extend(answers[i] is not None for i in asked)
        if not self._remembered and self.breaker_window > 0 and len(self.recent) == self.breaker_window:
            self._remembered = True
            self.memory.remember(asked=len(self.recent), valid=sum(self.recent), capable=not self.breaker_open)

    def _recall(self) -> None:
        """Start from the remembered verdict, once: a full window of failures (breaker open) or of successes."""
        if self._recalled:
            return
        with self._probe_lock:
            if self._recalled:
                return
            self._recalled = True
            verdict = self.memory.verdict()
            if verdict is not None and self.breaker_window > 0:
                self.recent.extend([verdict] * self.breaker_window)
                self._remembered = True

    # --- refine -------------------------------------------------------------------
    def refine(self, user_prompt: str, candidate: str, critique: Critique, *, params: SamplingParams | None = None,
               adapter: str | None = None) -> str:
        return self.refine_many([(user_prompt, candidate, critique)], params=params, adapter=adapter)[0]

    def refine_many(self, items: Sequence[tuple[str, str, Critique]], *, params: SamplingParams | None = None,
                    adapter: str | None = None, model: ChatModel | None = None) -> list[str]:
        """Rewrite each candidate following its critique (one batched model call).

        ``model`` writes the refinements (a served teacher refines its own
        rewrites); else the critic's model, else ``refiner``'s: refinement needs
        a model even when the critic asks none for scores (critic.use_llm=false).
        """
        llm = model or self.llm or (self.refiner() if self.refiner is not None else None)
        if llm is None:
            raise RuntimeError("refining needs a chat model")
        params = params or SamplingParams(n=1, max_new_tokens=200, temperature=0.7)
        convs = [[{"role": "user", "content": self._refine_tmpl.format(
            prompt=u, candidate=c, issues="; ".join(k.issues) or "none", suggestion=k.suggestion or "add detail",
            min_words=self.min_words, max_words=self.max_words)}] for u, c, k in items]
        # The rewriter version's adapter applies only where the critic shares the rewriter's model.
        if adapter is not None and adapter not in getattr(llm, "adapters", {}):
            adapter = None
        outs = llm.generate(convs, params.model_copy(update={"n": 1, "until": rewrite_complete}), adapter=adapter)
        return [clean_rewrite(o[0]) or c for o, (_, c, _) in zip(outs, items, strict=True)]


def parse_critique(text: str) -> LLMCritique | None:
    """Validated LLM critique or None; scores given on 0-10 or 0-100 scales are rescaled."""
    parsed = parse_json_model(text, LLMCritique)
    if parsed is not None:
        return parsed
    import json
    import re

    m = re.search(r"\{.*\}", text or "", re.DOTALL)
    if not m:
        return None
    try:
        raw = json.loads(m.group(0))
        for k in ("harmless", "accurate", "helpful"):
            v = float(raw[k])
            raw[k] = v / 10 if 1 < v <= 10 else v / 100 if 10 < v <= 100 else v
        return LLMCritique.model_validate(raw)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, ValidationError):
        return None
