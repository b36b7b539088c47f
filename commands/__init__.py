"""Sub-command groups of the `promptloop` CLI that live outside cli.py (one group per module)."""
