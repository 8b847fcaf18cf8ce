"""Training stage: next-token training of OneRec over whole sequences, with early stopping,
exact resume and data parallelism."""

from onerec.training.trainer import TrainConfig, Trainer, resolve_device
from onerec.training.windows import Windows, length_batches, prefix_windows, training_windows

__all__ = [
    "TrainConfig", "Trainer", "Windows", "length_batches", "prefix_windows", "resolve_device",
    "training_windows",
]
