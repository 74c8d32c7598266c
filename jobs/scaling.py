"""Scaling curves: brain-tune at several data sizes × {single, multi}-participant, then held-out alignment.

Local Ray (starts one):   python jobs/scaling.py --config jobs/configs/scaling/demo.yaml
Running cluster:          ray job submit --working-dir . -- python jobs/scaling.py --config ...
"""
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # a local Ray binds to 127.0.0.1

import ray  # noqa: E402

from braintune_dist.config import parse_cli  # noqa: E402
from braintune_dist.scaling import ScalingJobConfig, run  # noqa: E402


def main(argv=None) -> int:
    cfg = parse_cli(ScalingJobConfig, argv)
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
