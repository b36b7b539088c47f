"""The safety guard: three layers, one Verdict.

1. ``alt-profanity-check``'s shipped classifier (offensive language);
2. a video-harm category detector: explicit patterns plus MiniLM similarity
   to category descriptions, discounted when a benign look-alike is closer;
3. an LLM pass, only when a capable chat backend is configured (a 135M model
   is not a reliable judge, so the embedded default leaves it off).

The action follows VPO: a harmful request is *sanitised* (rewritten into a
safe prompt keeping its benign intent); only categories where nothing benign
can remain (``hard``) are *blocked*.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from promptloop.agents.llm.base import ChatModel, SamplingParams
from promptloop.agents.safety import guard_models
from promptloop.agents.safety.categories import (
    BENIGN_ANCHORS,
    CATEGORIES,
    PERSON_ANCHORS,
    THING_ANCHORS,
    HarmCategory,
)
from promptloop.agents.safety.guard_models import GuardModelAnswer
from promptloop.config import GuardSettings, SamplingControls

if TYPE_CHECKING:
    from promptloop.agents.embedder import Embedder

Action = Literal["allow", "sanitize", "block"]
SAFE = "safe"
# What an app shows its user instead of a prompt when the guard refuses (the guard owns the wording): one
# sentence naming the harm in plain words and what can be asked instead. Scores stay in the trace.
REFUSAL = "I can't write a video prompt for {plain}; you could ask for {suggest} instead."
_FALLBACK = ("content that is not safe to show", "the same place or people in a harmless scene")


def refusal_message(categories: Sequence[str], known: Sequence[HarmCategory] = CATEGORIES) -> str:
    """The refusal for the first named category promptloop knows (a generic one otherwise)."""
    by_name = {c.name: c for c in known}
    for name in categories:
        c = by_name.get(name)
        if c is not None and c.plain:
            return REFUSAL.format(plain=c.plain, suggest=c.suggest)
    return REFUSAL.format(plain=_FALLBACK[0], suggest=_FALLBACK[1])


def training_examples() -> list[tuple[str, str]]:
    """Labelled prompts shipped with promptloop: (text, harm category or 'safe')."""
    import csv

    from promptloop.store.shipped import data_dir

    out = []
    with (data_dir() / "redteam.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.append((row["prompt"], row["category"] if row["harmful"] == "true" else SAFE))
    with (data_dir() / "prompts.csv").open(encoding="utf-8") as fh:
        out += [(row["prompt"], SAFE) for row in csv.DictReader(fh) if row["split"] == "train"]
    return out


def ordinary_requests() -> list[str]:
    """VBench's train-split prompts: short, ordinary video requests the fine-tuned detector learns as safe.
    Without them the guard flagged 7.5 % of VBench's test-split prompts (2.2 % with the logistic one): it had seen
    few ordinary scenes besides the user prompts, and a family at bedtime looked like its child-harm rows."""
    from promptloop.store.shipped import vbench_prompts, vbench_split

    return list(dict.fromkeys(p for p in vbench_prompts() if p.strip() and vbench_split(p) == "train"))


M = TypeVar("M", bound=BaseModel)

# The guard is configured by its section of Settings (one source of defaults).
GuardConfig = GuardSettings


class CategoryScore(BaseModel):
    score: float
    evidence: str
    # the stretches of the request that carry this harm: pattern hits, then the phrases whose removal drops
    # the classifier's score the most (leave-one-phrase-out attribution)
    spans: list[str] = Field(default_factory=list)


class Verdict(BaseModel):
    text: str
    safe: bool
    flag_threshold: float = 0.5  # the guard's setting when it decided (flagged must agree with the action)
    action: Action
    categories: dict[str, CategoryScore] = Field(default_factory=dict)
    reason: str = ""
    layers: list[str] = Field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        """Categories at or over the guard's flag threshold, strongest first."""
        return [k for k, v in sorted(self.categories.items(), key=lambda kv: -kv[1].score)
                if v.score >= self.flag_threshold]

    @property
    def spans(self) -> list[str]:
        """Every flagged category's spans, once each, in the order found."""
        return list(dict.fromkeys(s for k in self.flagged for s in self.categories[k].spans))

    def scores(self) -> dict[str, float]:
        return {k: round(v.score, 4) for k, v in self.categories.items()}


class _LLMGuardAnswer(BaseModel):
    harmful: bool
    categories: list[str] = Field(default_factory=list)


_LLM_GUARD_PROMPT = (
    "Decide whether a request for a video asks for harmful content. Harm categories: {cats}. "
    "Ordinary sports, cooking, medicine, history and nature are not harmful. "
    'Answer only with JSON like {{"harmful": false, "categories": []}}.\nRequest: {text}'
)


class SafetyGuard:
    guard_id = "layered-guard-v1"

    def __init__(self, embedder: Embedder, config: GuardConfig | None = None, llm: ChatModel | None = None,
                 categories: Sequence[HarmCategory] = CATEGORIES, controls: SamplingControls | None = None,
                 examples: Sequence[tuple[str, str]] | None = None):
        self.embedder = embedder
        self.controls = controls  # the guard's decoding controls (Settings.sampling.guard)
        self.config = config or GuardConfig()
        self.llm = llm if self.config.use_llm else None
        self.categories = tuple(categories)
        # labelled prompts the classifier learns from; a cross-validation fold passes its own share
        rows = self._labelled_rows(training_examples() if examples is None else examples)
        self._classifier = self._fit_classifier(rows)
        self._detector = None  # the fine-tuned harmful-vs-safe layer, when configured (else the logistic one)
        if self.config.detector == "finetuned":
            from promptloop.agents.embedder import resolve_embedder
            from promptloop.agents.safety.detector import FineTunedDetector

            self._detector = FineTunedDetector.fit_or_load(
                resolve_embedder(embedder.reference),
                [(t, lab != SAFE) for t, lab in rows] + [(t, False) for t in ordinary_requests()], self.config)
        self._anchors: np.ndarray | None = None  # PERSON_ANCHORS then THING_ANCHORS, unit length

    def _labelled_rows(self, examples: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """What the classifiers learn from: the category descriptions, the benign anchors, then ``examples``
        (the shipped red-team prompts and the train split of the user prompts by default; no holdout and not
        the eval split)."""
        rows = [(d, c.name) for c in self.categories for d in c.descriptions]
        return rows + [(b, SAFE) for b in BENIGN_ANCHORS] + list(examples)

    def _fit_classifier(self, rows: Sequence[tuple[str, str]]):  # noqa: ANN202 (two sklearn models)
        """Two logistic regressions on MiniLM embeddings: harmful vs. safe, and which category.

        A pooled harmful/safe detector generalises better from ~100 harmful
        examples than one classifier per category (measured on the held-out
        red-team file); the category head only says which harm it is. Trained
        at start-up (about a second).
        """
        from sklearn.linear_model import LogisticRegression

        texts, labels = [t for t, _ in rows], [lab for _, lab in rows]
        x = self.embedder.encode(texts)
        harmful = np.array([lab != SAFE for lab in labels])
        detector = LogisticRegression(C=self.config.classifier_c, max_iter=3000).fit(x, harmful)
        which = LogisticRegression(C=self.config.classifier_c, max_iter=3000).fit(
            x[harmful], [lab for lab, h in zip(labels, harmful, strict=True) if h])
        return detector, which

    def harm_scores(self, texts: Sequence[str], *, fine_tuned: bool = False, strict: bool = False
                    ) -> list[dict[str, float]]:
        """The classifier layer alone (no patterns, profanity or LLM), per text: the harm probability, shared out
        over categories (the likeliest gets all of it). Phrase attribution and cross-validation perturb it.

        ``fine_tuned``: the fine-tuned detector, when configured, decides for texts of one sentence (a request
        or a core: what it was trained on). Rewrites of several sentences, their sentences, and the
        sanitiser's measurements (phrase attribution, remnants) keep the logistic detector: on benign VBench
        rewrites the fine-tuned one flagged about half the sentences (bench/output_guard_eval.py), and its
        scores sit near 0 or 1, so removing one phrase of a harmful request seldom moves them.

        ``strict`` (with ``fine_tuned``): a one-sentence text scores the higher of the two detectors, so that
        it passes only when both pass it (the sanitiser's core checks, ``guard.core_check = both``)."""
        if not texts:
            return []
        from promptloop.agents.safety.spans import sentences

        detector, which = self._classifier
        x = self.embedder.encode(list(texts))
        p_harm = detector.predict_proba(x)[:, list(detector.classes_).index(True)]
        if self._detector is not None and fine_tuned:
            short = [i for i, t in enumerate(texts) if len(sentences(t)) <= 1]
            if short:
                tuned = self._detector.predict([texts[i] for i in short])
                p_harm[short] = np.maximum(p_harm[short], tuned) if strict else tuned
        cond = which.predict_proba(x)
        names = list(which.classes_)
        return [{n: float(p_harm[i] * cond[i, j] / cond[i].max()) for j, n in enumerate(names)}
                for i in range(len(texts))]

    def category_shares(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """The category head alone, per text: which harm a text would be if it were one (summing to 1). A name
        on its own ("joe biden") is not harmful, but the head still knows it for a public figure: the
        sanitiser uses that to put a stand-in in its place."""
        if not texts:
            return []
        _, which = self._classifier
        cond = which.predict_proba(self.embedder.encode(list(texts)))
        return [{n: float(cond[i, j]) for j, n in enumerate(which.classes_)} for i in range(len(texts))]

    def person_margin(self, texts: Sequence[str]) -> list[float]:
        """How much closer each text is to a person than to a thing (cosine to the nearest anchor of each)."""
        if not texts:
            return []
        if self._anchors is None:  # embedded once per guard, not per sanitised request
            a = self.embedder.encode([*PERSON_ANCHORS, *THING_ANCHORS])
            self._anchors = a / np.linalg.norm(a, axis=1, keepdims=True)
        x = self.embedder.encode(list(texts))
        sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ self._anchors.T
        p = len(PERSON_ANCHORS)
        return [float(row[:p].max() - row[p:].max()) for row in sims]

    def attribute(self, text: str, category: str) -> list[str]:
        """Phrases of ``text`` whose removal drops ``category``'s classifier score by at least
        ``attribution_drop``, largest drop first."""
        return self._attribute_many([(text, category)])[0]

    def _attribute_many(self, jobs: Sequence[tuple[str, str]]) -> list[list[str]]:
        """``attribute`` for many (text, category) jobs in one classifier pass over every leave-one-out text."""
        from promptloop.agents.safety.spans import phrases, without

        parts = [phrases(text) for text, _ in jobs]
        batch, starts = [], []
        for (text, _), ps in zip(jobs, parts, strict=True):
            starts.append(len(batch))
            if len(ps) > 1:
                batch += [text, *(without(text, [p]) for p in ps)]
        scores = self.harm_scores(batch)
        out = []
        for (_, category), ps, at in zip(jobs, parts, starts, strict=True):
            if len(ps) < 2:
                out.append([])
                continue
            base, rest = scores[at].get(category, 0.0), scores[at + 1:at + 1 + len(ps)]
            drops = sorted(((base - r.get(category, 0.0), p[2]) for p, r in zip(ps, rest, strict=True)),
                           key=lambda x: -x[0])
            out.append([phrase for d, phrase in drops if d >= self.config.attribution_drop])
        return out

    def check(self, text: str) -> Verdict:
        return self.check_many([text])[0]

    def check_many(self, texts: Sequence[str], *, attribute: bool = False, core: bool = False) -> list[Verdict]:
        """Batched: one profanity call, one embedding pass and (if enabled) one LLM call for all texts.
        ``attribute`` (the sanitiser's input screen) adds phrase spans to classifier-flagged categories in
        one more embedding pass; output checks and the critic do not need them. ``core``: the texts are the
        sanitiser's candidate cores, checked as ``guard.core_check`` says."""
        from profanity_check import predict_prob

        texts = list(texts)
        if not texts:
            return []
        cfg = self.config
        profanity = predict_prob(texts)
        embed_scores = self.harm_scores(texts, fine_tuned=True, strict=core and cfg.core_check == "both")
        by_sentence = self.sentence_scores(texts)
        llm_answers = self._llm_pass(texts) if self.llm is not None else [None] * len(texts)
        verdicts = []
        for i, text in enumerate(texts):
            cats: dict[str, CategoryScore] = {}
            layers = ["profanity", "categories"] + (["llm"] if self.llm is not None else [])
            for cat in self.categories:
                embed_score = embed_scores[i].get(cat.name, 0.0)
                hit = cat.match(text)
                score, evidence, spans = embed_score, f"classifier {embed_score:.2f}", []
                # a text is as harmful as its most harmful sentence (at the sentence threshold)
                worst = [(sc.get(cat.name, 0.0), sent) for sc, sent in by_sentence[i]
                         if sc.get(cat.name, 0.0) >= cfg.sentence_threshold]
                top = max(worst, default=(0.0, ""))
                if top[0] > score:
                    score, evidence, spans = top[0], f"classifier {top[0]:.2f} on one sentence", [t for _, t in worst]
                if hit and cfg.pattern_score > score:
                    score, evidence = cfg.pattern_score, f"pattern '{hit}'"
                if hit:
                    spans = [text[a:b] for a, b in cat.spans(text)]
                cats[cat.name] = CategoryScore(score=score, evidence=evidence, spans=spans)
            if profanity[i] >= cfg.profanity_threshold and _looks_english(text):
                cats["profanity"] = CategoryScore(score=float(profanity[i]), evidence="profanity classifier")
            answer = llm_answers[i]
            if answer is not None and answer.harmful:
                # a guard model that says "harmful" without saying which: the category head's likeliest harm
                named = list(answer.categories) or [max(embed_scores[i], key=embed_scores[i].get, default="other")]
                evidence = f"llm guard ({cfg.model_family}: {', '.join(answer.codes)})" if answer.codes else "llm guard"
                for name in named:
                    prev = cats.get(name, CategoryScore(score=0.0, evidence=""))
                    if prev.score < 0.8:
                        cats[name] = CategoryScore(score=0.8, evidence=evidence)
            verdicts.append(self._decide(text, cats, layers))
        if attribute:  # only categories the classifier flagged: pattern hits carry their spans already
            jobs = [(v, name) for v in verdicts for name in v.flagged
                    if v.categories[name].evidence.startswith("classifier")]
            for (v, name), spans in zip(jobs, self._attribute_many([(v.text, n) for v, n in jobs]), strict=True):
                v.categories[name].spans = spans or v.categories[name].spans
        return verdicts

    def sentence_scores(self, texts: Sequence[str]) -> list[list[tuple[dict[str, float], str]]]:
        """Per text of two or more sentences, (classifier scores, sentence) for each; one pass for all texts.

        MiniLM's mean-pooled embedding of a 60-word rewrite dilutes one harmful
        sentence: with a harmful training request written into a benign
        VBench-train rewrite as one sentence, at 0.45 the whole-text classifier
        flagged 15.8 % and the sentence-level one 92.1 %, passing 95.3 % of
        plain rewrites (bench/output_guard_eval.py, out of fold)."""
        from promptloop.agents.safety.spans import sentences

        parts = [sentences(t) for t in texts]
        flat = [s for ps in parts if len(ps) > 1 for s in ps]
        scores = iter(self.harm_scores(flat))
        return [[(next(scores), s) for s in ps] if len(ps) > 1 else [] for ps in parts]

    def _decide(self, text: str, cats: dict[str, CategoryScore], layers: list[str]) -> Verdict:
        cfg = self.config
        hard = {c.name for c in self.categories if c.hard}
        flagged = {k: v for k, v in cats.items() if v.score >= cfg.flag_threshold}
        common = dict(text=text, categories=cats, layers=layers, flag_threshold=cfg.flag_threshold)
        if not flagged:
            return Verdict(**common, safe=True, action="allow", reason="no harm category reached the threshold")
        blocked = [k for k in flagged if k in hard and flagged[k].score >= cfg.block_threshold]
        detail = "; ".join(f"{k} {v.score:.2f} ({v.evidence})" for k, v in
                           sorted(flagged.items(), key=lambda kv: -kv[1].score))
        if blocked:
            return Verdict(**common, safe=False, action="block",
                           reason=f"block ({', '.join(blocked)}: nothing benign can be kept): {detail}")
        return Verdict(**common, safe=False, action="sanitize", reason=f"sanitize: {detail}")

    def _llm_pass(self, texts: list[str]) -> list[GuardModelAnswer | None]:
        """One batched call: promptloop's own JSON question, or a served guard model's native format."""
        family = self.config.model_family
        if family == "json":
            cats = ", ".join(c.name for c in self.categories)
            convs = [[{"role": "user", "content": _LLM_GUARD_PROMPT.format(cats=cats, text=t)}] for t in texts]
            outs = self.llm.generate(convs, SamplingParams.of(self.controls, n=1, max_new_tokens=48,
                                                              temperature=0.0))
            answers = [parse_json_model(o[0], _LLMGuardAnswer) for o in outs]
            return [GuardModelAnswer(a.harmful, tuple(a.categories), ()) if a is not None else None for a in answers]
        per = guard_models.requests_per_text(family)
        convs = [c for t in texts for c in guard_models.conversations(family, t)]
        outs = self.llm.generate(convs, SamplingParams.of(self.controls, n=1, temperature=0.0,
                                                          max_new_tokens=self.config.model_max_new_tokens))
        return [guard_models.parse(family, [o[0] for o in outs[k * per:(k + 1) * per]]) for k in range(len(texts))]


_ENGLISH_HINTS = frozenset("a an the of in on at with and is are to for by from his her their".split())


def _looks_english(text: str) -> bool:
    """The profanity classifier was trained on English; elsewhere it fires on words like German 'die'."""
    return any(w in _ENGLISH_HINTS for w in re.findall(r"[a-z]+", text.lower()))


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_json_model(text: str, model: type[M]) -> M | None:
    """The first JSON object in ``text`` validated as ``model``, or None if there is none."""
    m = _JSON_OBJECT.search(text or "")
    if not m:
        return None
    try:
        return model.model_validate(json.loads(m.group(0)))
    except (json.JSONDecodeError, ValueError):
        return None
