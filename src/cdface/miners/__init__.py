"""Miners: easy/hard samples from difficulty scores, hard-negative class centres from cosines."""

from .easy_hard import EasyHardMiner, draw_in_window, score_threshold
from .hard_negatives import hard_negative_centres

__all__ = ["EasyHardMiner", "draw_in_window", "hard_negative_centres", "score_threshold"]
