"""Scoring recommendations: full-ranking metrics and paired significance tests."""
