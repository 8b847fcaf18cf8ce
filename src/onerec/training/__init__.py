"""Training stage: next-token training of OneRec with early stopping and exact resume."""

from onerec.training.trainer import TrainConfig, Trainer, training_examples

__all__ = ["TrainConfig", "Trainer", "training_examples"]
