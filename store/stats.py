"""What the collected data looks like: counts per round (pairs by feedback level, videos by status), margin
histogram, principle score distributions."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from promptloop.store.models import Candidate, Critique, PreferencePair, Round, SFTExample, Video

MARGIN_BINS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]


def data_stats(engine: Engine) -> dict:
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
