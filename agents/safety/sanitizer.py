"""From a flagged request to its benign core, or to a refusal that says why in plain words.

VPO's rewriter keeps what is harmless in a harmful request and drops the
rest. A 135M rewriter told "leave the unsafe part out" in a safety note does
not (it left 75% of harmful requests unsafe), so the cut is made before the
rewriter sees the request: the guard's spans (pattern hits and phrases whose
removal lowers the classifier's score) are removed, then the phrase whose
removal helps most, round by round, until the guard passes what is left. Nouns
of removed phrases ("a man" of "a man shooting people") are put back one by
one where the guard still passes. The core keeps the scene, not the act: what
is left of a harmful act goes, and a real name becomes "a person". Nothing
benign left, or a hard category (sexual content with children, instructions
for harm): refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from promptloop.agents.safety.guard import SafetyGuard, Verdict, refusal_message
from promptloop.agents.safety.spans import (
    OPENERS,
    content_words,
    names_something,
    noun_parts,
    phrase_ranges,
    render,
    sentences,
    tokens,
    verb_object,
    verb_starts,
)

Tokens = Sequence[tuple[int, int, str]]


@dataclass
class Screened:
    """What the rewriter is given for one request: the request itself, its core, or nothing (refused)."""

    prompt: str
    verdict: Verdict
    core: str | None = None  # the request the rewriter expands (the prompt itself when allowed)
    removed: list[str] = field(default_factory=list)
    refusal: str | None = None  # the sentence an app shows instead of a prompt

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    @property
    def sanitized(self) -> bool:
        return self.verdict.action == "sanitize" and not self.refused


def screen(guard: SafetyGuard, prompts: Sequence[str], rounds: int | None = None) -> list[Screened]:
    """Check every prompt; sanitise the flagged ones; refuse hard categories and what cannot be saved."""
    rounds = guard.config.sanitize_rounds if rounds is None else rounds
    out = []
    for p, v in zip(prompts, guard.check_many(list(prompts), attribute=True), strict=True):
        if v.action == "allow":
            out.append(Screened(p, v, core=p))
        elif v.action == "block" or rounds == 0:
            out.append(Screened(p, v, refusal=refusal_message(_hard_first(guard, v))))
        else:
            out.append(_sanitize(guard, p, v, rounds))
    return out


def _replaced(guard: SafetyGuard, text: str, v: Verdict) -> str:
    """Spans of flagged categories that name a stand-in (a real person -> "a person") replaced by it."""
    for c in guard.categories:
        if c.replacement and c.name in v.flagged:
            for pat in c.compiled:
                text = pat.sub(c.replacement, text)
    return text


def _stood_in(guard: SafetyGuard, text: str, v: Verdict) -> str:
    """In a flagged request, the subjects and objects that the category head places in a category with a
    stand-in, and that read as a person, replaced by it: the names no pattern lists ("leonardo dicaprio
    punching a fan" -> "a person punching a fan")."""
    cats = [c for c in guard.categories if c.replacement]
    if not cats or not v.flagged:
        return text
    toks = tokens(text)
    parts = []
    for i, j in phrase_ranges(toks):
        for r in noun_parts(toks, i, j) or [range(i + (toks[i][2].lower() in OPENERS), j)]:
            if r and toks[r.start][2].lower() not in OPENERS and content_words(" ".join(toks[k][2] for k in r)):
                parts.append(r)
    spans = [text[toks[r.start][0]:toks[r[-1]][1]] for r in parts]
    shares, people = guard.category_shares(spans), guard.person_margin(spans)
    swaps = [(toks[r.start][0], toks[r[-1]][1], c.replacement)
             for r, span, sh, person in zip(parts, spans, shares, people, strict=True)
             for c in cats[:1]  # one stand-in per part: the first category that has one
             if sh.get(c.name, 0.0) >= guard.config.stand_in_share and person > 0 and span.lower() != c.replacement]
    for a, b, rep in sorted(swaps, reverse=True):
        text = text[:a] + rep + text[b:]
    return text


def _hard_first(guard: SafetyGuard, v: Verdict) -> list[str]:
    hard = {c.name for c in guard.categories if c.hard}
    return sorted(v.flagged, key=lambda k: k not in hard)


def _sanitize(guard: SafetyGuard, prompt: str, verdict: Verdict, rounds: int) -> Screened:
    text = _stood_in(guard, _replaced(guard, prompt, verdict), verdict)
    if text != prompt:
        v = guard.check_many([text], attribute=True, core=True)[0]
        if v.action == "allow":
            return Screened(prompt, verdict, core=text, removed=[s for s in verdict.spans if s not in text])
        verdict = v if v.action == "sanitize" else verdict
    toks = tokens(text)
    ranges = phrase_ranges(toks)
    removed: set[int] = set()
    for span in verdict.spans:  # the guard's own spans first: pattern hits, attributed phrases
        at = text.lower().find(span.lower())
        if at >= 0:
            hit = {k for k, (a, b, _) in enumerate(toks) if a < at + len(span) and b > at}
            removed |= hit | verb_object(toks, ranges, hit)
    # in a harmful request, what is done "with" something names the instrument ("with a razor", "with a
    # stick"): it goes too, since the guard passes a weapon or a blade on its own
    removed |= {k for i, j in ranges if toks[i][2].lower() == "with" for k in range(i, j)}
    v = guard.check_many([render(text, toks, removed)], core=True)[0] if removed else verdict
    for _ in range(rounds):
        # a fragment scoring over the block threshold ("a teenager" alone) is not a reason to refuse: the
        # request itself was not blocked, so the search goes on
        if v.action == "allow" or not content_words(render(text, toks, removed)):
            break
        left = [(i, j) for i, j in ranges if any(k not in removed for k in range(i, j))]
        # drop a whole phrase (while another is left), or cut a phrase down to one of its noun parts
        trials = [removed | set(range(i, j)) for i, j in left] if len(left) > 1 else []
        trials += [removed | (set(range(i, j)) - set(part)) for i, j in left for part in noun_parts(toks, i, j)]
        # or end a phrase before one of its later verbs ("a person giving a speech praising terrorists" ->
        # "a person giving a speech")
        trials += [removed | set(range(k, j)) for i, j in left for k in verb_starts(toks, i, j)[1:]]
        trials = [t for t in trials if t != removed]
        if not trials:
            break
        checks = guard.check_many([render(text, toks, t) for t in trials], core=True)
        best = min(range(len(trials)), key=lambda n: (checks[n].action != "allow", _worst(checks[n]),
                                                      len(trials[n])))
        removed, v = trials[best], checks[best]
    if v.action == "allow" or not content_words(render(text, toks, removed)):
        # the subjects of removed phrases come back where the guard passes them; when the cuts left nothing,
        # a subject may be the whole core ("a kitten trapped in a microwave" -> "a kitten")
        removed = _put_back(guard, text, toks, ranges, removed)
        removed = _without_acts(guard, text, toks, ranges, removed)
        core = render(text, toks, removed)
        if names_something(core) and (v.action == "allow" or guard.check_many([core], core=True)[0].action == "allow"):
            return Screened(prompt, verdict, core=core, removed=_gone(prompt, core))
    return Screened(prompt, verdict, removed=_gone(prompt, render(text, toks, removed)),
                    refusal=refusal_message(_hard_first(guard, verdict)))


def _put_back(guard: SafetyGuard, text: str, toks: Tokens, ranges: Sequence[tuple[int, int]], removed: set[int]
              ) -> set[int]:
    """Restore the subjects of removed phrases, one at a time, where the guard still passes the result."""
    # only a phrase's subject (the words before its verb): its object without the verb reads as a broken
    # sentence ("a man a tourist on a beach")
    stand_ins = {c.replacement for c in guard.categories if c.replacement}
    parts = [r for i, j in ranges for r in noun_parts(toks, i, j)
             if r.start == i and any(k in removed for k in r)
             and (content_words(words := " ".join(toks[k][2] for k in r)) or words.lower() in stand_ins)]
    for part in parts:
        trial = removed - set(part)
        if guard.check_many([render(text, toks, trial)], core=True)[0].action == "allow":
            removed = trial
    if names_something(render(text, toks, removed)):
        return removed
    # no subject could stay: the first object (a noun phrase with its article) the guard passes on its own is
    # the core ("robbing a bank with an assault rifle" -> "a bank"; not "weed" of "smoking weed")
    trials = [removed - set(r) for i, j in ranges for r in noun_parts(toks, i, j)
              if r.start > i and toks[r.start][2].lower() in {"a", "an", "the"}]
    trials = [t for t in trials if names_something(render(text, toks, t))]
    # one batch; the first that passes wins
    checks = guard.check_many([render(text, toks, t) for t in trials], core=True)
    return next((t for t, v in zip(trials, checks, strict=True) if v.action == "allow"), removed)


def _without_acts(guard: SafetyGuard, text: str, toks: Tokens, ranges: Sequence[tuple[int, int]], removed: set[int]
                  ) -> set[int]:
    """A core keeps the scene, not the act. The classifier passes a remnant of the act in a short core
    ("a crowd chanting", "soldiers celebrating", "kids cigarettes"), and the rewriter then writes the act back;
    so what is left of a phrase from its first verb on goes when it alone scores ``guard.remnant_threshold``
    or more, or when its object was cut; so does the rest of a cut phrase that said where or how, and a
    comparison the guard flags on its own. Chosen on the training rows out of fold
    (``bench/sanitizer_dev.py``): unsafe cores there went from 14.9 % to 5.0 % of the harmful rows."""
    tails, broken = [], set()
    for i, j in ranges:
        verbs = [k for k in verb_starts(toks, i, j) if k not in removed]
        if verbs:
            tail = set(range(verbs[0], j))
            if tail & removed:  # an act that lost its object ("celebrating a" of "celebrating a massacre")
                broken |= tail
            else:
                tails.append(tail)
    removed = removed | broken
    limit = guard.config.remnant_threshold
    # what is left of a cut phrase that only says where or how ("for ethnic" of "for ethnic cleansing",
    # "and smoking cigarettes" -> "cigarettes") goes with the rest of it, as does a comparison the guard
    # flags on its own ("as bats"; not "dressed as a pirate")
    likes = [(i, j) for i, j in ranges if toks[i][2].lower() == "as" and not any(k in removed for k in range(i, j))]
    flagged = guard.check_many([" ".join(toks[k][2] for k in range(i, j)) for i, j in likes], core=True)
    for i, j in ranges:
        cut = any(k in removed for k in range(i, j))
        if cut and toks[i][2].lower() in OPENERS:
            removed = removed | set(range(i, j))
    for (i, j), v in zip(likes, flagged, strict=True):
        if v.action != "allow":
            removed = removed | set(range(i, j))
    if not tails:
        return removed
    scores = guard.harm_scores([" ".join(toks[k][2] for k in sorted(t)) for t in tails])
    for tail, sc in zip(tails, scores, strict=True):
        if max(sc.values(), default=0.0) >= limit:
            removed = removed | tail
    return removed


def _worst(v: Verdict) -> float:
    return max((c.score for c in v.categories.values()), default=0.0)


def _gone(prompt: str, kept: str) -> list[str]:
    """The stretches of ``prompt`` that ``kept`` leaves out, in order (for the trace); a name that a stand-in
    replaced counts as gone."""
    from difflib import SequenceMatcher

    words = [w for _, _, w in tokens(prompt)]
    ops = SequenceMatcher(None, [w.lower() for w in words], [w.lower() for _, _, w in tokens(kept)],
                          autojunk=False).get_opcodes()
    runs = (" ".join(words[a:b]).strip(" ,;") for op, a, b, _, _ in ops if op in ("delete", "replace"))
    return [r for r in runs if r]


def trim_output(text: str, verdict: Verdict, min_words: int) -> str | None:
    """A rewrite without the sentences that carry what the output guard flagged, or None when that cuts
    nothing, or leaves fewer than ``min_words`` words.

    Most of a rewrite that fails is harmless detail (light, camera, setting);
    its flagged sentences are what the 135M rewriter added back. Dropping them
    keeps the rest of the expansion where a refusal would throw it all away.
    The caller checks the result again."""
    spans = [sp.lower() for sp in verdict.spans]
    if not spans:
        return None
    parts = sentences(text, min_words=1)
    kept = [p for p in parts if not any(sp in p.lower() or p.lower() in sp for sp in spans)]
    out = " ".join(kept)
    return out if len(kept) < len(parts) and len(out.split()) >= min_words else None


def plain_expansion(core: str, template: str) -> str | None:
    """The core as the video prompt, framed by the configured neutral camera text (None when no template is
    set): what the graph answers when no rewrite of a core the guard passed is safe, instead of refusing."""
    core = core.strip().rstrip(".")
    if not template or not core:
        return None
    return template.format(core=core[:1].upper() + core[1:])
