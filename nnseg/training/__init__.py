"""Training: augmentation (and, as it lands, data loading, losses and the training loop)."""
