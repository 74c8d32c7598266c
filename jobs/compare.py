"""The papers' comparison: untuned vs brain-tuned vs control-tuned models, N replicate seeds each, as concurrent
Ray Tune trials, all evaluated in one feature pool and one ridge stage.

Local Ray (starts one):   python jobs/compare.py --config jobs/configs/compare/demo.yaml
Running cluster:          ray job submit --working-dir . -- python jobs/compare.py --config jobs/configs/compare/paper_hubert.yaml
Resume an interrupted comparison (finished fits are kept): the same command with --compare.resume true
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.jobs.compare import CompareJobConfig, run
from braintune_dist.experiment.launch import connect_ray, run_main


def main(argv=None) -> int:
    cfg = parse_cli(CompareJobConfig, argv)
    connect_ray(cfg.fit.ray.address)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
