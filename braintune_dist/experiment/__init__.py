"""Torch-free orchestration: job configs, the typed spec sent to workers, Tune grids and MLflow parent runs, storage paths, upstream compatibility."""
