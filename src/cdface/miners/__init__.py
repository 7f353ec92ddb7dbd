"""Miners: easy/hard samples from difficulty scores, hard-negative class centres from cosines."""

from .easy_hard import EasyHardMiner, draw_in_window, score_threshold
from .hard_negatives import HardNegatives, hard_negative_centres, last_row_of_class, mine_hard_negatives

__all__ = [
    "EasyHardMiner",
    "HardNegatives",
    "draw_in_window",
    "hard_negative_centres",
    "last_row_of_class",
    "mine_hard_negatives",
    "score_threshold",
]
