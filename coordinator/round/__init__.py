"""The round: selection, screening, aggregation math, server optimizers."""
