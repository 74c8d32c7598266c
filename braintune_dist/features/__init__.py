"""Features of a speech model on the stimulus: causal windows through every layer (``extract``), their
alignment to the TR grid (``interp``: Lanczos, z-score, delays) and model-free low-level spaces (``lowlevel``)."""
