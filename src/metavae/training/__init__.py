"""One trainer for every model, with atomic checkpoints and exact resume."""
