"""The errors a user can fix. The CLI prints their message in one line and exits 2."""


class PromptloopError(Exception):
    """Base for bad input and missing prerequisites (never for bugs)."""


class TransientError(Exception):
    """A model call that may succeed when retried (timeout, dropped connection, out of memory)."""


def is_transient(exc: BaseException) -> bool:
    """Retry predicate for model-calling graph nodes."""
    if isinstance(exc, (TransientError, ConnectionError, TimeoutError)):
        return True
    try:
        import torch

        return isinstance(exc, torch.OutOfMemoryError)
    except (ImportError, AttributeError):  # pragma: no cover
        return False
