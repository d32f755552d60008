"""The training engine: step functions (and, after the reshape, runtime, checkpoints, run directories)."""
