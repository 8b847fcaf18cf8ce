"""Generation: trie-constrained beam search over semantic IDs (ranking and session modes), and
serving a trained run on raw ids (``Recommender``)."""

from onerec.generation.beam_search import (
    Beams,
    beam_search_items,
    beam_search_sessions,
    item_head_log_probs,
    rank_examples,
)
from onerec.generation.recommend import Recommendation, Recommender, Session

__all__ = [
    "Beams",
    "Recommendation",
    "Recommender",
    "Session",
    "beam_search_items",
    "beam_search_sessions",
    "item_head_log_probs",
    "rank_examples",
]
