"""Hyper-parameter / data-size sweep of brain-tuning: Ray Tune + Optuna + ASHA over Ray Train fits, nested in MLflow.

Local Ray (starts one):   python jobs/sweep.py --config jobs/configs/sweep/demo.yaml
Resume an interrupted one: python jobs/sweep.py --config jobs/configs/sweep/demo.yaml --resume
                           (short for --search.resume true: finished trials are kept, the rest are run)
Running cluster:          ray job submit --working-dir . -- python jobs/sweep.py --config ...
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.experiment.launch import connect_ray, run_main
from braintune_dist.jobs.sweep import SweepConfig, run


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--resume" in argv:                       # the shorthand; --search.resume true is the field itself
        argv = [a for a in argv if a != "--resume"] + ["--search.resume", "true"]
    cfg = parse_cli(SweepConfig, argv)
    connect_ray(cfg.fit.ray.address)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
