"""Generation: trie-constrained beam search over semantic IDs (ranking and session modes)."""

from onerec.generation.beam_search import Beams, beam_search_items, beam_search_sessions

__all__ = ["Beams", "beam_search_items", "beam_search_sessions"]
