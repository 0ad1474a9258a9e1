"""Training the TT model: run preparation, the loop, its steps, checkpoints, callbacks,
evaluation during training and several seeds."""
