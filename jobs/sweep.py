"""Hyper-parameter / data-size sweep of brain-tuning: Ray Tune + Optuna + ASHA over Ray Train fits, nested in MLflow.

Local Ray (starts one):   python jobs/sweep.py --config jobs/configs/sweep/demo.yaml
Resume an interrupted one: python jobs/sweep.py --config jobs/configs/sweep/demo.yaml --search.resume true
Running cluster:          ray job submit --working-dir . -- python jobs/sweep.py --config ...
"""
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # a local Ray binds to 127.0.0.1

import ray  # noqa: E402

from braintune_dist.config import parse_cli  # noqa: E402
from braintune_dist.sweep import SweepConfig, run  # noqa: E402


def main(argv=None) -> int:
    cfg = parse_cli(SweepConfig, argv)
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:        # `ray job submit` sets RAY_ADDRESS; the job's runtime_env is already in force
        ray.init(address=address)
    else:              # a new local cluster: pass this shell's settings to its workers
        ray.init(include_dashboard=False, runtime_env={"env_vars": {
            k: os.environ[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "HF_HUB_OFFLINE", "MLFLOW_TRACKING_URI")
            if k in os.environ}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
