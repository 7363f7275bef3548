"""The next-word model, its training loop, suggestions, metrics and checkpoints."""
