"""Losses: the paper's closeness-and-diversity loss."""

from .closeness_diversity import ClosenessDiversityLoss, closeness, diversity

__all__ = ["ClosenessDiversityLoss", "closeness", "diversity"]
