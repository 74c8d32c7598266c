"""Data layer end to end: simulate (if needed) → validate → noise ceilings → Parquet shards → Ray Data.

    python jobs/prepare_data.py --config jobs/configs/prepare_data/demo.yaml [--field value ...]
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.experiment.launch import connect_ray, run_main
from braintune_dist.jobs.prepare_data import PrepareConfig, run


def main(argv=None) -> int:
    cfg = parse_cli(PrepareConfig, argv)
    if cfg.stream_check:                      # only the summary epoch needs Ray
        connect_ray()
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
