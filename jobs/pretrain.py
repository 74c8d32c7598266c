"""Pretrain a small random-init speech backbone on phone recognition (stand-in for a pretrained checkpoint).

    python jobs/pretrain.py --config jobs/configs/pretrain/demo.yaml [--pretrain.steps 400 --pretrain.out runs/pretrained/x]
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.experiment.launch import run_main
from braintune_dist.jobs.pretrain import PretrainJobConfig, run


def main(argv=None) -> int:
    run(parse_cli(PretrainJobConfig, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
