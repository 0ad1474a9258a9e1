"""Behaviour policies (exported actors, random, mixed, a trained run) and collecting
D4RL-style datasets with them."""
