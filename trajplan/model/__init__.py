"""The Trajectory Transformer GPT: the network (gpt), its key/value caches (cache), cached
inference for the planner (decoding) and the CPU training kernels (kernels); and the small
MLP policies trajplan acts with besides it, exported actors (actor: the *.actor.safetensors
format of BC's and IQL's policies, behaviour policies and a search's prior)."""
