"""Training: partitioning, optimizers, train state, trainer loop, checkpoints, evaluation."""
