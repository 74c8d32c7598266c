"""Multi-participant brain-tuning on Ray Train (+ DeepSpeed), then alignment before/after, all in MLflow.

Local Ray (starts one):   python jobs/multi_brain.py --config jobs/configs/multi_brain/demo.yaml
Running cluster:          ray job submit --working-dir . -- python jobs/multi_brain.py --config ...
Any field can be overridden: --train.epochs 3 --engine.kind ddp --stream.n_participants 2 ...
"""
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # a local Ray binds to 127.0.0.1

import ray  # noqa: E402

from braintune_dist.config import parse_cli  # noqa: E402
from braintune_dist.multibrain import MultiBrainConfig, run  # noqa: E402


def main(argv=None) -> int:
    cfg = parse_cli(MultiBrainConfig, argv)
    # under `ray job submit` RAY_ADDRESS is set and ray.init() joins that cluster; else a local one starts
    ray.init(address=cfg.ray.address or None, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE":
                                       os.environ.get("HF_HUB_OFFLINE", "0")}} if not cfg.ray.address else None)
    ray.data.DataContext.get_current().enable_progress_bars = False
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
