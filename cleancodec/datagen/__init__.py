"""Data generation apart from the cache stage: the demo corpus (real speech and noise) and the
synthetic corpus used by smoke runs and tests."""
