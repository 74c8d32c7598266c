"""Data layer end to end: simulate (if needed) → validate → noise ceilings → Parquet shards → Ray Data.

    python jobs/prepare_data.py --config jobs/configs/prepare_data/demo.yaml [--field value ...]
"""
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")    # Ray on 127.0.0.1 for local runs

import ray  # noqa: E402

from braintune_dist.config import parse_cli  # noqa: E402
from braintune_dist.pipeline import PrepareConfig, prepare  # noqa: E402
from braintune_dist.launch import run_main  # noqa: E402


def main(argv=None) -> int:
    cfg = parse_cli(PrepareConfig, argv)
    if cfg.stream_check:
        ray.init(include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    prepare(cfg, cfg.shard.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
