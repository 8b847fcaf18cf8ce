"""onerec: an end-to-end generative recommender (OneRec, arXiv 2502.18965) in PyTorch."""

__version__ = "0.1.0"
