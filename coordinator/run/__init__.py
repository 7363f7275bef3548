"""SIMULATION HARNESS: a run's lifecycle (open, step, save, repair, evaluate,
personalise); may see both the phones' and the server's side."""
