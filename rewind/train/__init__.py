"""Training: the loop, its hooks, the optimizer and schedule, and the trunk runner."""
