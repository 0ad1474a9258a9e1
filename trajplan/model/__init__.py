"""The Trajectory Transformer GPT: the network (gpt), its key/value caches (cache), cached
inference for the planner (decoding) and the CPU training kernels (kernels)."""
