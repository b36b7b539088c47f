"""The safety guard: layered checks that produce one Verdict."""
