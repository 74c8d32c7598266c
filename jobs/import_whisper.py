"""Import a CTranslate2 (faster-whisper) Whisper model as an ordinary Hugging Face checkpoint folder.

    python jobs/import_whisper.py                                   # the bundled Whisper tiny.en
    python jobs/import_whisper.py --import_model.src path/to/ct2-folder --import_model.out runs/pretrained/x
"""
import sys

from braintune_dist.config import parse_cli
from braintune_dist.jobs.import_whisper import ImportJobConfig, run
from braintune_dist.experiment.launch import run_main


def main(argv=None) -> int:
    run(parse_cli(ImportJobConfig, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
