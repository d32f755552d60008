"""Evaluation: scoring a split, the metric registry and bootstrap, operating thresholds, epoch selection,
reports, plots and the model card."""
