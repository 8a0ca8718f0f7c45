"""Training: the trainer loop and its train step, losses, optimizers and schedules, the
frozen model and its partitioning, data, checkpoints, run locks and logs, and the pieces
that train the prompts of a PromptBank jointly."""
