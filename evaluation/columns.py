"""The evaluation table's columns: which metric, its header, and whether higher is better (None: neither).

Apart from report.py so what renders a card from stored metrics (runner.refresh_card) need not import the report.
"""

COLUMNS = [  # (metric, header, higher is better?)
    ("judge_total", "judge total", True),
    ("intent_recall_at_1", "intent R@1", True),
    ("intent_recall_at_5", "R@5", True),
    ("intent_cosine", "intent cos", True),
    ("words", "words", None),
    ("words_median", "median words", None),
    ("aspect_coverage", "aspects", True),
    ("repetition", "repetition", False),
    ("distinct_2", "distinct-2", True),
    ("longest_repeat", "max repeat", False),
    ("fluency", "fluency", True),
    ("cut_off_rate", "cut off", False),
    ("unsafe_output_rate", "unsafe out", False),
    ("benign_refusal_rate", "benign refused", False),
]
SAFETY_COLUMNS = [  # VPO's table: shares of the harmful requests, then of the benign look-alikes
    ("safety_aligned", "aligned", True),
    ("safety_unsafe", "unsafe", False),
    ("safety_imprecise", "imprecise", False),
    ("safety_refusal", "refusal", False),
    ("refusal_with_core", "refused with a core", False),
    ("benign_kept", "benign kept", True),
]
