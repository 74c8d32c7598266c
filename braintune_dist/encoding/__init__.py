"""Voxel-wise encoding models: ridge regression with per-voxel CV alphas, scored by Pearson r."""
from .backend import get_backend
from .correlation import correlation_score
from .ridge import RidgeCV

__all__ = ["RidgeCV", "correlation_score", "get_backend"]
