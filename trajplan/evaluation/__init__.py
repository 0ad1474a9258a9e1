"""Evaluation: episodes played by a run, eval files, workers, aggregates and plots."""
