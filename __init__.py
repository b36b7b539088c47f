"""promptloop: a self-improving prompt rewriter for text-to-video models."""

__version__ = "0.1.0"
