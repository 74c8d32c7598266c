"""A simulated dataset in the ds003020 layout with known ground truth: speech stories (``speech``), a
brain that responds to them (``brain``) and the writer of the whole dataset (``dataset``)."""
from braintune_dist.data.simulate.dataset import SimConfig, main, simulate

__all__ = ["SimConfig", "main", "simulate"]
