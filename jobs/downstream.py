"""What brain-tuning did to the model itself: linear probes per layer on speech tasks, Whisper transcription with
the original decoder, semantic–phonetic preference of words; untuned vs any checkpoints → tables, figures, MLflow.

    python jobs/downstream.py --config jobs/configs/downstream/demo.yaml [--checkpoints [DIR,...]]
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.experiment.launch import run_main
from braintune_dist.jobs.downstream import DownstreamConfig, run


def main(argv=None) -> int:
    run(parse_cli(DownstreamConfig, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
