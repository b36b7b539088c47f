"""Held-out evaluation of rewriter versions and baselines (`promptloop eval`)."""
