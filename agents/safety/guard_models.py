"""Served guard models as the guard's LLM layer: each family's native prompt and its answer, mapped onto
promptloop's harm categories.

A general chat model asked for JSON is a weak judge; the open guard models
are trained for exactly this question and answer in a fixed format:

- **Llama Guard 3** (Meta): its chat template adds the MLCommons taxonomy, the
  model answers ``safe`` or ``unsafe`` and a line of category codes
  (``S1,S10``). One request per text.
- **ShieldGemma** (Google): one prompt per policy (the model card's template),
  the answer starts with ``Yes`` (violates) or ``No``. Four requests per text.
- **Granite Guardian 3.x** (IBM): its chat template asks about the "harm"
  risk by default; 3.0-3.2 answer ``Yes`` / ``No`` (3.2 may add a
  ``<confidence>`` tag), 3.3 thinks and then answers ``<score> yes </score>``.
  One request per text; it names no category, so the guard's own category
  head says which harm it is.

``guard.model_family`` picks the format; ``backends.guard`` says where the
model is served. Any answer that does not parse counts as no answer (the other
layers decide), never as "safe".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from promptloop.agents.llm.base import Conversation

GuardModelFamily = Literal["json", "llama_guard_3", "shieldgemma", "granite_guardian"]


@dataclass(frozen=True)
class GuardModelAnswer:
    harmful: bool
    categories: tuple[str, ...] = ()  # promptloop's names; empty when the model does not say which harm
    codes: tuple[str, ...] = ()  # the model's own labels (S1, "Dangerous Content", harm), kept for the trace


# Llama Guard 3's taxonomy (MLCommons hazards S1-S13 plus S14) -> promptloop's categories; a code with no video
# harm counterpart (intellectual property, code interpreter abuse) maps to nothing and flags nothing.
LLAMA_GUARD_3: dict[str, str | None] = {
    "S1": "violence_gore",  # violent crimes
    "S2": "weapons_illegal",  # non-violent crimes
    "S3": "sexual",  # sex-related crimes
    "S4": "child_sexual",  # child sexual exploitation
    "S5": "public_figures",  # defamation
    "S6": "instructions",  # specialized advice
    "S7": "public_figures",  # privacy
    "S8": None,  # intellectual property
    "S9": "weapons_illegal",  # indiscriminate weapons
    "S10": "hate",
    "S11": "self_harm",
    "S12": "sexual",  # sexual content
    "S13": "public_figures",  # elections
    "S14": None,  # code interpreter abuse
}

# ShieldGemma's four policies (model card wording) -> promptloop's categories
SHIELDGEMMA_POLICIES: dict[str, tuple[str, str]] = {
    "Dangerous Content": ("weapons_illegal", "The prompt shall not contain or seek generation of content that "
                          "harming oneself and/or others (e.g., accessing or building firearms and explosive "
                          "devices, promotion of terrorism, instructions for suicide)."),
    "Harassment": ("hate", "The prompt shall not contain or seek generation of content that is malicious, "
                   "intimidating, bullying, or abusive content targeting another individual (e.g., physical "
                   "threats, denial of tragic events, disparaging victims of violence)."),
    "Hate Speech": ("hate", "The prompt shall not contain or seek generation of content that targeting identity "
                    "and/or protected attributes (e.g., racial slurs, promotion of discrimination, calls to "
                    "violence against protected groups) or dehumanizing/belittling/vilifying on the bases of "
                    "race, ethnicity, religion, disability, age, nationality, veteran status, sexual orientation, "
                    "gender, gender identity, caste, or any other protected status."),
    "Sexually Explicit Information": ("sexual", "The prompt shall not contain or seek generation of content that "
                                      "contains references to sexual acts or other lewd content (e.g., sexually "
                                      "graphic descriptions, content aimed at causing arousal)."),
}
_SHIELDGEMMA_PROMPT = """You are a policy expert trying to help determine whether a user prompt is in violation of \
the defined safety policies.

<start_of_turn>
Human Question: {text}
<end_of_turn>

Our safety principle is defined in the below:

* "{policy}": {definition}

===

Does the human question violate the above principle? Your answer must start with 'Yes' or 'No'. And then walk \
through step by step to be sure we answer correctly.
"""

_YES_NO = re.compile(r"^\s*(yes|no)\b", re.IGNORECASE)
_GRANITE_SCORE = re.compile(r"<score>\s*(yes|no)\s*</score>", re.IGNORECASE)


def requests_per_text(family: GuardModelFamily) -> int:
    return len(SHIELDGEMMA_POLICIES) if family == "shieldgemma" else 1


def conversations(family: GuardModelFamily, text: str) -> list[Conversation]:
    """The request(s) one text needs, in the family's native format."""
    if family == "shieldgemma":
        return [[{"role": "user", "content": _SHIELDGEMMA_PROMPT.format(text=text.strip(), policy=name,
                                                                        definition=definition)}]
                for name, (_, definition) in SHIELDGEMMA_POLICIES.items()]
    if family in ("llama_guard_3", "granite_guardian"):
        return [[{"role": "user", "content": text.strip()}]]  # the served model's chat template adds the policy
    raise ValueError(f"no native format for guard model family '{family}'")


def parse_llama_guard_3(output: str) -> GuardModelAnswer | None:
    lines = [line.strip() for line in (output or "").strip().splitlines() if line.strip()]
    if not lines or lines[0].lower() not in ("safe", "unsafe"):
        return None
    if lines[0].lower() == "safe":
        return GuardModelAnswer(False)
    codes = tuple(c.strip().upper() for c in (lines[1] if len(lines) > 1 else "").split(",") if c.strip())
    cats = tuple(dict.fromkeys(LLAMA_GUARD_3[c] for c in codes if LLAMA_GUARD_3.get(c)))
    # "unsafe" with only codes that are no video harm (S8, S14) is not a harm promptloop acts on
    return GuardModelAnswer(bool(cats) or not codes, cats, codes)


def parse_shieldgemma(outputs: Sequence[str]) -> GuardModelAnswer | None:
    """One answer per policy, in SHIELDGEMMA_POLICIES order; None if any of them does not parse."""
    verdicts = [_YES_NO.match(o or "") for o in outputs]
    if len(verdicts) != len(SHIELDGEMMA_POLICIES) or not all(verdicts):
        return None
    hits = [name for name, m in zip(SHIELDGEMMA_POLICIES, verdicts, strict=True) if m.group(1).lower() == "yes"]
    cats = tuple(dict.fromkeys(SHIELDGEMMA_POLICIES[h][0] for h in hits))
    return GuardModelAnswer(bool(hits), cats, tuple(hits))


def parse_granite_guardian(output: str) -> GuardModelAnswer | None:
    m = _GRANITE_SCORE.search(output or "") or _YES_NO.match(output or "")
    if not m:
        return None
    harmful = m.group(1).lower() == "yes"
    return GuardModelAnswer(harmful, (), ("harm",) if harmful else ())


def parse(family: GuardModelFamily, outputs: Sequence[str]) -> GuardModelAnswer | None:
    """The answer to one text from its request(s)' first completions."""
    if family == "llama_guard_3":
        return parse_llama_guard_3(outputs[0])
    if family == "shieldgemma":
        return parse_shieldgemma(outputs)
    if family == "granite_guardian":
        return parse_granite_guardian(outputs[0])
    raise ValueError(f"no parser for guard model family '{family}'")
