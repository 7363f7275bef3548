"""The central baseline on torch.distributed, and local-only training."""
