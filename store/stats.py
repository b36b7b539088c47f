"""What the collected data looks like: counts per round (pairs by feedback level, videos by status), margin
histogram, principle score distributions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from promptloop.store.models import Candidate, Critique, PreferencePair, Round, SFTExample, Video

# below 0: a degenerate rejected side the judge scored higher than the chosen one
MARGIN_BINS = [-1.0, 0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]


def data_stats(engine: Engine, *, length_ratio: float = 1.5,
               count_words: Callable[[str], int] = lambda t: len(t.split())) -> dict:
    """``length_ratio``: a pair whose chosen side has over this many times the rejected side's words counts as
    a longer-chosen pair (collection keeps those only when chosen also wins on intent; their share says how much
    of the preference signal still points at length). ``count_words`` is the agents' word count."""
    chosen, rejected = aliased(Candidate), aliased(Candidate)
    with Session(engine) as s:
        rounds = {r.id: r.index for r in s.exec(select(Round))}
        per_round: dict[int | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for rid, n in s.exec(select(Candidate.round_id, func.count()).group_by(Candidate.round_id)):
            per_round[rid]["candidates"] = n
        for rid, status, n in s.exec(select(SFTExample.round_id, SFTExample.status, func.count())
                                     .group_by(SFTExample.round_id, SFTExample.status)):
            per_round[rid][f"sft_{status}"] = n
        for rid, n, avg in s.exec(select(PreferencePair.round_id, func.count(), func.avg(PreferencePair.margin))
                                  .group_by(PreferencePair.round_id)):
            per_round[rid]["pairs"] = n
            per_round[rid]["mean_margin"] = round(float(avg), 4)
        for rid, level, n in s.exec(select(PreferencePair.round_id, PreferencePair.feedback_level, func.count())
                                    .group_by(PreferencePair.round_id, PreferencePair.feedback_level)):
            per_round[rid][f"pairs_{level}_level"] = n
        for rid, status, n in s.exec(select(Candidate.round_id, Video.status, func.count())
                                     .join(Video, Video.candidate_id == Candidate.id)
                                     .group_by(Candidate.round_id, Video.status)):
            per_round[rid][f"videos_{status}"] = n
        lengths: dict[int | None, list[tuple[int, int, bool]]] = defaultdict(list)
        for rid, ct, rt, rs in s.exec(select(PreferencePair.round_id, chosen.text, rejected.text,
                                             PreferencePair.rejected_scores)
                                      .join(chosen, chosen.id == PreferencePair.chosen_id)
                                      .join(rejected, rejected.id == PreferencePair.rejected_id)):
            lengths[rid].append((count_words(ct), count_words(rt), bool((rs or {}).get("degenerate"))))
        for rid, rows in lengths.items():
            r = per_round[rid]
            r["chosen_words"] = round(float(np.mean([c for c, _, _ in rows])), 1)
            r["rejected_words"] = round(float(np.mean([j for _, j, _ in rows])), 1)
            r["longer_chosen_share"] = round(float(np.mean([c > length_ratio * max(1, j) for c, j, _ in rows])), 4)
            r["degenerate_rejected_share"] = round(float(np.mean([d for _, _, d in rows])), 4)
        margins = list(s.exec(select(PreferencePair.margin)))
        scores = defaultdict(lambda: defaultdict(list))
        for rid, h, a, hp in s.exec(select(Candidate.round_id, Critique.harmless, Critique.accurate, Critique.helpful)
                                    .join(Critique, Critique.candidate_id == Candidate.id)):
            for name, v in (("harmless", h), ("accurate", a), ("helpful", hp)):
                scores[rid][name].append(v)
    hist, _ = np.histogram(margins, bins=MARGIN_BINS) if margins else (np.zeros(len(MARGIN_BINS) - 1), None)

    def label(rid: int | None) -> str:
        return "none" if rid is None else str(rounds.get(rid, rid))

    return {
        "rounds": [{"round": label(rid), **dict(v)} for rid, v in sorted(per_round.items(), key=lambda kv: label(kv[0]))],
        "margin_histogram": [{"from": MARGIN_BINS[i], "to": MARGIN_BINS[i + 1], "pairs": int(hist[i])}
                             for i in range(len(MARGIN_BINS) - 1)],
        "principles": [{"round": label(rid), "principle": name, "n": len(v), "mean": round(float(np.mean(v)), 4),
                        "p10": round(float(np.percentile(v, 10)), 4), "p50": round(float(np.percentile(v, 50)), 4),
                        "p90": round(float(np.percentile(v, 90)), 4)}
                       for rid, d in sorted(scores.items(), key=lambda kv: label(kv[0])) for name, v in d.items()],
    }
