"""Tune sweeps of the reward economy: the trial (trial.py), its config (config.py), set-up (tuner.py), report."""
