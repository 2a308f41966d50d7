"""Training: the loop, optimiser and schedule, losses, checkpoints, distributed setup and run directories."""
