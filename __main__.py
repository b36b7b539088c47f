"""`python -m promptloop` (and `accelerate launch -m promptloop train ...` for multi-GPU training)."""

from promptloop.cli import main

main()
