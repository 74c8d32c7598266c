"""Brain alignment of speech models: features per layer → voxel-wise ridge → r / noise ceiling → MLflow.

    python jobs/evaluate.py --config jobs/configs/evaluate/demo.yaml [--checkpoints [runs/ray/<run>/checkpoint_...]]
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.jobs.evaluate import EvaluateConfig, run
from braintune_dist.experiment.launch import run_main


def main(argv=None) -> int:
    run(parse_cli(EvaluateConfig, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
