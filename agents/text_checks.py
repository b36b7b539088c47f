"""Deterministic text checks shared by the critic, the judge and evaluation.

Each returns a number in [0, 1] with a documented meaning, so the same
measurement means the same thing wherever it is reported.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[\w'-]+", re.UNICODE)

STOPWORDS = frozenset("""
a an the of in on at to for with by from and or but is are was were be being been it its this that these
those as into onto over under up down out off very some any each every his her their our your my me we
you they he she them him us who whom which what while than then there here so such just also not no
""".split())

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "single": 1, "pair": 2, "couple": 2, "dozen": 12,
}

# Aspect coverage: the six things a video prompt should say. A rewrite covers an
# aspect when it uses at least one cue word of it (matched on word prefixes).
ASPECT_CUES: dict[str, tuple[str, ...]] = {
    "subject": (),  # covered when the user's content words are present (see coverage)
    "action": ("walk", "run", "mov", "danc", "fly", "flies", "jump", "spin", "play", "swim", "rid", "drift",
               "fall", "flow", "sway", "rotat", "turn", "rais", "ris", "glid", "slid", "chas", "press", "lean",
               "leap", "roll", "splash", "wave", "waving", "drip", "pour", "crash", "climb", "race", "racing"),
    "setting": ("in a", "in the", "on a", "on the", "background", "street", "room", "forest", "city", "beach",
                "field", "sky", "ocean", "kitchen", "studio", "mountain", "garden", "park", "stage", "desert",
                "interior", "outdoor", "indoor", "landscape", "river", "lake", "snow", "village", "road"),
    "lighting": ("light", "lit", "sun", "glow", "shadow", "golden hour", "dusk", "dawn", "neon", "lamp",
                 "candle", "bright", "dim", "backlit", "moonlight", "sunset", "sunrise", "overcast", "soft"),
    "camera": ("camera", "shot", "close-up", "close up", "wide", "angle", "pan", "tilt", "zoom", "dolly",
               "tracking", "aerial", "drone", "overhead", "pov", "handheld", "orbit", "push in", "pull back",
               "lens", "focus", "frame", "framing", "slow motion", "time-lapse", "timelapse"),
    "style": ("cinematic", "realistic", "photoreal", "anime", "cartoon", "style", "film", "35mm", "vintage",
              "painterly", "watercolor", "3d", "render", "documentary", "dreamlike", "surreal", "color",
              "colour", "palette", "tone", "mood", "atmosphere", "4k", "hdr", "grain"),
}

META_PATTERNS = re.compile(
    r"(here(?:'s| is| are) (?:the|a|an|your)|as an ai|i cannot|i can't|sure[,!]|rewritten prompt|"
    r"video prompt:|prompt:|\bnote:|i hope|let me know|\bthe user (?:requested|asked|wants|wanted)\b|"
    r"\bthis (?:video|prompt|request) (?:is|was)\b|\bthe (?:request|prompt) (?:is|was) (?:to|about)\b)", re.IGNORECASE)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Words that carry the user's intent: not stopwords, not numbers, at least 3 letters."""
    return [w for w in words(text) if w not in STOPWORDS and len(w) >= 3 and not w.isdigit()
            and w not in NUMBER_WORDS]


def _stem(w: str) -> str:
    for suf in ("ing", "es", "ed", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def coverage(user: str, candidate: str) -> tuple[float, list[str]]:
    """Share of the user's content words (stemmed) that the candidate keeps, and the missing ones."""
    needed = list(dict.fromkeys(content_words(user)))
    if not needed:
        return 1.0, []
    have = {_stem(w) for w in words(candidate)}
    have_prefix = {w[:5] for w in have if len(w) >= 5}
    missing = [w for w in needed if _stem(w) not in have and (len(w) < 5 or _stem(w)[:5] not in have_prefix)]
    return 1 - len(missing) / len(needed), missing


def numbers(text: str) -> Counter:
    out: Counter = Counter()
    for w in words(text):
        if w.isdigit():
            out[int(w)] += 1
        elif w in NUMBER_WORDS:
            out[NUMBER_WORDS[w]] += 1
    return out


def counts_kept(user: str, candidate: str) -> tuple[float, list[int]]:
    """1.0 when every number the user gave appears in the candidate (as digit or word)."""
    need = numbers(user)
    if not need:
        return 1.0, []
    have = numbers(candidate)
    missing = [n for n in need if n not in have]
    return 1 - len(missing) / len(need), missing


def length_fit(candidate: str, lo: int, hi: int) -> float:
    """1 inside [lo, hi] words, falling linearly to 0 at 0 words and at 3*hi words."""
    n = len(words(candidate))
    if lo <= n <= hi:
        return 1.0
    if n < lo:
        return n / lo
    return max(0.0, 1 - (n - hi) / (2 * hi))


def repetition_rate(text: str) -> float:
    """Share of word trigrams that repeat an earlier trigram (0 = none, 1 = all)."""
    ws = words(text)
    grams = [tuple(ws[i:i + 3]) for i in range(len(ws) - 2)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def aspect_coverage(user: str, candidate: str) -> tuple[float, dict[str, bool]]:
    """How many of subject / action / setting / lighting / camera / style the candidate covers (share of 6)."""
    low = " " + " ".join(words(candidate)) + " "
    ws = words(candidate)
    hits: dict[str, bool] = {}
    for aspect, cues in ASPECT_CUES.items():
        if aspect == "subject":
            hits[aspect] = coverage(user, candidate)[0] >= 0.5
        else:
            hits[aspect] = any((" " in c and f" {c}" in low) or any(w.startswith(c) for w in ws) for c in cues)
    return sum(hits.values()) / len(hits), hits


def has_meta_text(candidate: str) -> bool:
    return bool(META_PATTERNS.search(candidate))


def distinct_n(text: str, n: int = 2) -> float:
    """Share of word n-grams that are distinct (1 = no n-gram repeats; a looping text tends to 0)."""
    ws = [w.lower() for w in words(text)]
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def longest_repeat(text: str) -> int:
    """Length in words of the longest word sequence that occurs at least twice (0 when nothing repeats).

    A repeated n-gram contains repeated (n-1)-grams, so the longest length is found by bisection.
    """
    ws = [w.lower() for w in words(text)]

    def repeats(n: int) -> bool:
        seen: set[tuple[str, ...]] = set()
        for i in range(len(ws) - n + 1):
            g = tuple(ws[i:i + n])
            if g in seen:
                return True
            seen.add(g)
        return False

    lo, hi = 0, max(0, len(ws) - 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if repeats(mid) else (lo, mid - 1)
    return lo


_SENTENCE_END = re.compile(r"""[.!?…]["'”’)\]]*\s*$""")


def is_cut_off(text: str) -> bool:
    """The text stops mid-sentence (no closing punctuation): what a generation budget running out leaves."""
    return bool(text.strip()) and not _SENTENCE_END.search(text)



def degeneracy(text: str, *, max_words: int, repetition: float = 0.2, length_factor: float = 2.0) -> list[str]:
    """Why a rewrite is degenerate (empty when it is not): what a reward must never pay for.

    Looping (a share of repeated word trigrams over ``repetition``), meta-text
    about the task instead of a prompt, a cut-off sentence, nothing at all, or
    over ``length_factor`` times the target's word maximum.
    """
    if not text.strip():
        return ["empty"]
    reasons = []
    rate = repetition_rate(text)
    if rate > repetition:
        reasons.append(f"repetition {rate:.2f}")
    if has_meta_text(text):
        reasons.append("meta text")
    if is_cut_off(text):
        reasons.append("cut off")
    n = len(words(text))
    if n > length_factor * max_words:
        reasons.append(f"{n} words")
    return reasons
