"""The original brain-tuning code's analyses of untuned and brain-tuned models: permutation-tested alignment, low-level residual
alignment, layer-wise probes, semantic–auditory region contrast; tables and figures → out_dir and MLflow.

    python jobs/analyze.py --config jobs/configs/analyze/demo.yaml [--checkpoints [runs/ray/<run>/checkpoint_...]]
"""
import sys

from braintune_dist.jobs.analyze import AnalyzeConfig, run
from braintune_dist.config import parse_cli
from braintune_dist.experiment.launch import run_main


def main(argv=None) -> int:
    run(parse_cli(AnalyzeConfig, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
