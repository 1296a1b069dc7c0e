"""Training: datasets, losses, loops."""
