"""Baselines evaluated like TT runs: behaviour cloning (plain and return-weighted)."""
