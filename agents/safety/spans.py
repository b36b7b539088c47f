"""Phrases of a request, and the request without some of them: the units the sanitiser removes.

A phrase starts at a comma or at a word that opens a new part of a scene
(a preposition, a conjunction, a relative pronoun), so "a man shooting people
in a crowded mall" is ["a man shooting people", "in a crowded mall"]. Removing
phrases rather than words keeps what is left readable for a small rewriter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

OPENERS = frozenset(
    "and while with in on at into near inside outside during under behind over from for that who which until as "
    "of by off against through across beside around onto after before because so but or then".split())
# words a core may not start or end with once a phrase is gone ("in a crowded mall" -> "a crowded mall")
_DANGLING = OPENERS | frozenset("a an the is are was were be being been its his her their its to who whose "
                                 "very just how step by".split())
_ARTICLES = frozenset({"a", "an", "the"})
_STOP = _DANGLING | frozenset("it this these those them they he she him some any one people person someone "
                              "something video scene clip shot shown showing realistic footage".split())
_WORD = re.compile(r"[A-Za-z0-9'-]+|[,;:.!?]")


def phrases(text: str) -> list[tuple[int, int, str]]:
    """(start, end, phrase) for each phrase of ``text``, in order; punctuation separates and is dropped."""
    toks = tokens(text)
    return [(toks[i][0], toks[j - 1][1], text[toks[i][0]:toks[j - 1][1]]) for i, j in phrase_ranges(toks)]


def _cut(text: str, spans: Iterable[tuple[int, int]]) -> str:
    keep, last = [], 0
    for a, b in sorted(spans):
        if a >= last:
            keep.append(text[last:a])
            last = b
        else:
            last = max(last, b)
    keep.append(text[last:])
    return "".join(keep)


def tidy(text: str) -> str:
    """Collapse what a removal leaves: doubled spaces and commas, dangling words at either end (an article
    stays at the start when a noun follows it: "a in an alley" -> "an alley", "a cat" stays)."""
    words = [w for w in re.sub(r"\s*([,;])\s*(?:[,;]\s*)+", r"\1 ", text).split()]
    words = [w for w in words if w not in {",", ";"}]

    def bare(w: str) -> str:
        return w.strip(",;.").lower()

    while words:
        first = bare(words[0])
        if first in _ARTICLES and len(words) > 1 and bare(words[1]) not in _DANGLING:
            break
        if first not in _DANGLING:
            break
        words.pop(0)
    while words and bare(words[-1]) in _DANGLING:
        words.pop()
    out = " ".join(words).strip(" ,;")
    return re.sub(r"\s+([,;.])", r"\1", out)


def without(text: str, parts: Sequence[tuple[int, int, str] | tuple[int, int] | str]) -> str:
    """``text`` with ``parts`` removed (phrases as returned by :func:`phrases`, (start, end) spans, or
    strings, every occurrence), tidied."""
    spans: list[tuple[int, int]] = []
    for p in parts:
        if isinstance(p, str):
            spans += [m.span() for m in re.finditer(re.escape(p), text, re.IGNORECASE)]
        else:
            spans.append((p[0], p[1]))
    return tidy(_cut(text, spans))


_VERBISH = re.compile(r"^(?:is|are|was|were|be|being|been|gets?|got|\w{3,}ing|\w{3,}ed)$", re.IGNORECASE)
# after one of these an -ing or -ed word is a noun or an adjective: "a wedding", "the crowded subway"
_DETERMINERS = frozenset("a an the his her their its this that my your our".split())


def _is_verb(toks: Sequence[tuple[int, int, str]], k: int) -> bool:
    return bool(_VERBISH.match(toks[k][2])) and not (k > 0 and toks[k - 1][2].lower() in _DETERMINERS)


def tokens(text: str) -> list[tuple[int, int, str]]:
    """(start, end, token): words and punctuation, the units a removal mask covers."""
    return [(m.start(), m.end(), m.group(0)) for m in _WORD.finditer(text)]


def phrase_ranges(toks: Sequence[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """Token index ranges [i, j) of the phrases (as :func:`phrases` cuts them) of a token list."""
    out, start = [], None
    for k, (_, _, tok) in enumerate(toks):
        if tok in ",;:.!?":
            if start is not None:
                out.append((start, k))
            start = None
            continue
        if start is not None and tok.lower() in OPENERS:
            out.append((start, k))
            start = None
        if start is None:
            start = k
    if start is not None:
        out.append((start, len(toks)))
    return out


def render(text: str, toks: Sequence[tuple[int, int, str]], removed: set[int]) -> str:
    """The text of the tokens not removed, tidied."""
    return tidy(_cut(text, [(a, b) for k, (a, b, _) in enumerate(toks) if k in removed]))


def noun_parts(toks: Sequence[tuple[int, int, str]], i: int, j: int) -> list[range]:
    """Within phrase [i, j): the words before its first verb-like word and after its last one ("a man
    shooting people" -> "a man", "people"), which a sanitiser may put back."""
    verbs = [k for k in range(i, j) if _is_verb(toks, k)]
    if not verbs:
        return []
    return [r for r in (range(i, verbs[0]), range(verbs[-1] + 1, j)) if len(r) > 0]


def verb_starts(toks: Sequence[tuple[int, int, str]], i: int, j: int) -> list[int]:
    """Token indexes of the verb-like words of phrase [i, j), in order."""
    return [k for k in range(i, j) if _is_verb(toks, k)]


def verb_object(toks: Sequence[tuple[int, int, str]], ranges: Sequence[tuple[int, int]], hit: set[int]) -> set[int]:
    """Where a removed span starts at a verb-like word, the rest of its phrase: the verb's object goes with
    it ("a man stabbing a tourist on a beach" -> "a man on a beach", not "a man a tourist on a beach")."""
    out: set[int] = set()
    for i, j in ranges:
        inside = sorted(k for k in hit if i <= k < j)
        if inside and _is_verb(toks, inside[0]):
            out |= set(range(inside[0], j))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
MIN_SENTENCE_WORDS = 3  # shorter pieces ("Slow motion.") are judged with the whole text only


def sentences(text: str, min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """The sentences of ``text`` (at . ! ? ; or a line break) of at least ``min_words`` words: the units an
    output check scores, since one harmful sentence in a long rewrite is diluted in the whole text's
    embedding."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= max(1, min_words)]


_NOT_NOUN = frozenset("up out off down away everywhere should could would must can will".split())


def names_something(text: str) -> bool:
    """Whether ``text`` has a content word that can name a thing, not only verbs, adverbs and particles: a
    core of "fully" or "spilling out" says nothing a rewriter could expand."""
    toks = tokens(text.lower())
    return any(not _is_verb(toks, k) and not w.endswith("ly") and w not in _NOT_NOUN
               for k, (_, _, w) in enumerate(toks) if w not in _STOP and len(w) > 1 and w[0].isalnum())


def content_words(text: str) -> list[str]:
    """Words that carry meaning (not function words or the generic nouns of a prompt)."""
    return [w for w in re.findall(r"[a-z0-9'-]+", text.lower()) if w not in _STOP and len(w) > 1]
