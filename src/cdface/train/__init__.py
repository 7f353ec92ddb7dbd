"""Training: the trainer (`fit`), the score bank, the CD batch sampler, checkpoints, the quickstart."""
