"""Evaluation: cross-validation, summaries, learning-curve studies and leakage audits; runs come from a factory."""
