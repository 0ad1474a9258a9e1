"""Baselines evaluated like TT runs: behaviour cloning (plain and return-weighted) and
Implicit Q-Learning (whose critic also scores TT's plans, TT + Q)."""
