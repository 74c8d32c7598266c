"""Voxel-wise encoding models: ridge regression with per-voxel CV alphas, scored by Pearson r."""
from braintune_dist.ridge.backend import get_backend
from braintune_dist.ridge.correlation import correlation_score
from braintune_dist.ridge.ridge import RidgeCV

__all__ = ["RidgeCV", "correlation_score", "get_backend"]
