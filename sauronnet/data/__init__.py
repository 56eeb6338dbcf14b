"""Training data: cross-validation splits (and, later, patch loading and augmentation)."""
