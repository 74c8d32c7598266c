"""Scaling curves: brain-tune at several data sizes × {single, multi}-participant, then held-out alignment.

Local Ray (starts one):   python jobs/scaling.py --config jobs/configs/scaling/demo.yaml
Running cluster:          ray job submit --working-dir . -- python jobs/scaling.py --config ...
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.experiment.launch import connect_ray, run_main
from braintune_dist.jobs.scaling import ScalingJobConfig, run


def main(argv=None) -> int:
    cfg = parse_cli(ScalingJobConfig, argv)
    connect_ray(cfg.fit.ray.address)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
