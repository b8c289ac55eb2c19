"""Training engine: optimizers and schedules, checkpoints, and the fit loop."""
