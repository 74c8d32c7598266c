"""Multi-participant brain-tuning on Ray Train (+ DeepSpeed), then alignment before/after, all in MLflow.

Local Ray (starts one):   python jobs/multi_brain.py --config jobs/configs/multi_brain/demo.yaml
Running cluster:          ray job submit --working-dir . -- python jobs/multi_brain.py --config ...
Any field can be overridden: --fit.train.epochs 3 --fit.engine.kind ddp --fit.stream.n_participants 2 ...
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.experiment.launch import connect_ray, run_main
from braintune_dist.jobs.multi_brain import MultiBrainConfig, run


def main(argv=None) -> int:
    cfg = parse_cli(MultiBrainConfig, argv)
    connect_ray(cfg.fit.ray.address)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
