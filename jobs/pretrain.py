"""Pretrain a small random-init speech backbone on phone recognition (stand-in for a pretrained checkpoint).

    python jobs/pretrain.py --config jobs/configs/pretrain/demo.yaml [--steps 400 --out runs/pretrained/x]
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.jobs.launch import run_main
from braintune_dist.jobs.pretrain import PretrainConfig, run


def main(argv=None) -> int:
    run(parse_cli(PretrainConfig, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
