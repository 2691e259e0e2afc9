"""Training loops, evaluation, checkpoints and logging. ``python -m learners.run`` is the entry."""
