"""Environments: the registry and factory, D4RL reference scores, the one rollout loop, video."""
