"""Import job: a CTranslate2 (faster-whisper) Whisper model folder → an ordinary HF checkpoint folder.

``python jobs/import_whisper.py --import_model.src bundled --import_model.out runs/pretrained/whisper-tiny.en``
writes the bundled Whisper tiny.en; any other CTranslate2 Whisper folder works the same way. The folder it
writes is what ``model.pretrained`` of the other jobs loads. Nested in a tuning job (``import_model.enabled``)
the same import runs before training and sets ``fit.model.pretrained`` (``experiment.imports``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from braintune_dist.experiment.imports import ImportSettings, ensure_imported


@dataclass
class ImportJobConfig:
    """Import a CTranslate2 Whisper model as a Hugging Face checkpoint folder."""

    import_model: ImportSettings = dataclasses.field(default_factory=lambda: ImportSettings(enabled=True))
    """Source folder, output folder and checksum."""


def run(cfg: ImportJobConfig, log=print) -> Path:
    return ensure_imported(cfg.import_model, log)
