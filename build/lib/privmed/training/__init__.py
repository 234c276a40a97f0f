"""Training: the run loop, model inputs, augmentation, synthetic data in training."""
