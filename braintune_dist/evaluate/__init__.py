"""Brain alignment of speech models: features → voxel-wise ridge → r, r / noise ceiling → tables, figures,
MLflow. The one encoding pipeline that the evaluate, multi_brain, scaling and analyze jobs call."""
