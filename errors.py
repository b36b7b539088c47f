"""The errors a user can fix. The CLI prints their message in one line and exits 2."""


class PromptloopError(Exception):
    """Base for bad input and missing prerequisites (never for bugs)."""
