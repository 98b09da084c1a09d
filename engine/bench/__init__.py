"""`python -m engine.bench`: our engine against mlx-lm on the same shape-true random checkpoints."""
