"""Torch-free orchestration: job configs composed of stage configs, the preflight, the stages every training job
runs first, Tune trials with their MLflow parent runs, storage paths, and upstream compatibility shims (compat)."""
