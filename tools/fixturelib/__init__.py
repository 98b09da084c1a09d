"""Building blocks of `tools/make_fixtures.py`: tiny Gemma 4 checkpoints for the test suite (dev only)."""
