"""BrainTuner (backbone + LoRA + head), LR schedule, single-process engine and checkpoints (no Ray)."""
import pytest
import torch
from torch import nn

from braintune_dist.model.backbone import build_backbone
from braintune_dist.model.config import ModelConfig
from braintune_dist.config import to_dict
from braintune_dist.train.checkpoint import CheckpointError, load_backbone, load_tuner, mark_complete, save_model
from braintune_dist.train.engine import Engine, lr_lambda
from braintune_dist.train.config import EngineSettings, OptimSettings
from braintune_dist.train.losses import brain_loss
from braintune_dist.model.tuner import BrainTuner
from braintune_dist.model.config import HeadSettings, LoraSettings

WAV = torch.randn(2, 16000 * 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "whisper"])
@pytest.mark.parametrize("kind", ["shared", "per_participant"])
def test_shapes_and_trainable_parameters(family, kind):
    over = {"max_source_positions": 200} if family == "whisper" else {}
    m = BrainTuner(ModelConfig(family=family, overrides=over), LoraSettings(rank=4),
                   HeadSettings(kind=kind, bottleneck=8 if kind == "shared" else 0), n_vertices=30, n_participants=3)
    out = m.train()(WAV)
    assert out.shape == ((2, 30) if kind == "shared" else (2, 3, 30))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    backbone = {n for n in trainable if n.startswith("backbone.")}
    assert backbone and all("lora_" in n for n in backbone)           # only LoRA adapters in the backbone
    assert any("q_proj" in n for n in backbone) and any("out_proj" in n for n in backbone)
    groups = m.param_groups(1e-4, 1e-3)
    assert [g["name"] for g in groups] == ["backbone", "head"] and groups[1]["lr"] == 1e-3
    assert sum(len(g["params"]) for g in groups) == len(trainable)


def test_full_finetuning_and_dropout_modes():
    m = BrainTuner(ModelConfig(overrides={"hidden_dropout": 0.5}), LoraSettings(enabled=False),
                   HeadSettings(), n_vertices=5)
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any("encoder.layers.0.attention.q_proj.weight" in n for n in names)
    assert not any("feature_extractor" in n for n in names)              # CNN front end frozen
    m.train()
    drops = [mod for mod in m.backbone.modules() if isinstance(mod, nn.Dropout)]
    assert drops and not any(d.training for d in drops)                  # backbone dropout off while tuning
    assert m.training and m.head.training
    a, b = m(WAV), m(WAV)
    assert torch.allclose(a, b)                                          # deterministic in train mode


def test_lr_schedule_spans_the_steps_taken():
    f = lr_lambda(total_steps=100, warmup_frac=0.1, schedule="linear")
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(99) == pytest.approx(1 / 90)   # decays to ~0 at the last step
    c = lr_lambda(100, 0.0, "cosine")
    assert c(0) == pytest.approx(1.0) and c(100) == pytest.approx(0.0, abs=1e-9)


def test_single_process_engine_learns_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg_model, lora, head = ModelConfig(), LoraSettings(rank=4), HeadSettings()
    model = BrainTuner(cfg_model, lora, head, n_vertices=6, n_participants=2)
    assert not model.head.weight.any()                                   # standardize: the head starts at zero
    with torch.no_grad():                                                # what trainer.feature_stats does
        z = model.backbone.pooled(WAV)
    model.set_feature_stats(z.mean(0), z.std(0))
    eng = Engine(model, OptimSettings(backbone_lr=5e-3, head_lr=5e-3, warmup_frac=0.0, grad_accum=2),
                 EngineSettings(kind="ddp"), total_steps=15, micro_batch=2)
    tgt = torch.randn(2, 2, 6)
    pm, vm = torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)
    losses = []
    for _ in range(30):
        loss = brain_loss("mse", eng.forward(WAV), tgt, pm, vm)
        eng.backward_step(loss)
        losses.append(loss.item())
    assert eng.step == 15 and losses[-1] < 0.75 * losses[0]
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)                        # the adapters moved
    # checkpoint → a fresh model (no Ray) predicts exactly the same
    save_model(tmp_path, model, dict(config=dict(model=to_dict(cfg_model), lora=to_dict(lora), head=to_dict(head)),
                                     n_vertices=6, participants=["a", "b"], epoch=0, step=eng.step))
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        load_tuner(tmp_path)
    mark_complete(tmp_path)
    loaded, payload = load_tuner(tmp_path)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(WAV), model(WAV), atol=1e-5)
        # the backbone with LoRA merged in gives the tuned features, not the untuned ones
        tuned, untuned = load_backbone(cfg_model, str(tmp_path)), load_backbone(cfg_model)
        assert torch.allclose(tuned.pooled(WAV), model.backbone.pooled(WAV), atol=1e-5)
        assert not torch.allclose(untuned.pooled(WAV), model.backbone.pooled(WAV), atol=1e-4)
    assert payload["step"] == 15


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_tuner(tmp_path / "missing")
    (tmp_path / "model.pt").write_bytes(b"not a torch file")
    mark_complete(tmp_path)
    with pytest.raises(CheckpointError, match="model.pt: unreadable"):
        load_tuner(tmp_path)


def test_checkpoint_is_self_checking(tmp_path):
    """A checkpoint tuned from a pretrained folder refuses a base that was replaced or deleted since, and a
    same-size damage of its weights: each with an error naming the path, never a silent other result."""
    import shutil
    base = tmp_path / "base"
    build_backbone(ModelConfig(seed=3)).model.save_pretrained(base)
    cfg_model, lora, head = ModelConfig(pretrained=str(base)), LoraSettings(rank=2), HeadSettings()
    model = BrainTuner(cfg_model, lora, head, n_vertices=4, n_participants=1)
    ck = tmp_path / "ck"
    save_model(ck, model, dict(config=dict(model=to_dict(cfg_model), lora=to_dict(lora), head=to_dict(head)),
                               n_vertices=4, participants=["a"], epoch=0, step=1))
    mark_complete(ck)
    load_tuner(ck)                                                       # intact: loads
    shutil.rmtree(base)
    build_backbone(ModelConfig(seed=4)).model.save_pretrained(base)     # same architecture, other weights
    with pytest.raises(CheckpointError, match=r"ck: the base model it was tuned from \(.*base\) has other weights"):
        load_tuner(ck)
    shutil.rmtree(base)
    with pytest.raises(CheckpointError, match=r"ck: its base model .*base .* is gone"):
        load_tuner(ck)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF                                                   # same size, one byte changed
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged checkpoint .*ck: model.safetensors does not match its sha256"):
        load_tuner(ck)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "whisper"])
def test_pretrained_checkpoint_by_path(tmp_path, family):
    """`model.pretrained` loads a local checkpoint (here a tiny one saved by the test)."""
    over = {"max_source_positions": 200} if family == "whisper" else {}
    src = BrainTuner(ModelConfig(family=family, seed=7, overrides=over), LoraSettings(enabled=False),
                     HeadSettings(), n_vertices=4).backbone
    hf = src.model if family != "whisper" else None
    if family == "whisper":                      # a WhisperModel checkpoint: the encoder is taken from it
        from transformers import WhisperConfig, WhisperModel
        from braintune_dist.model.backbone import TINY_WHISPER
        full = WhisperModel(WhisperConfig(**{**TINY_WHISPER, **over}))
        full.encoder.load_state_dict(src.model.state_dict())
        hf = full
    hf.save_pretrained(tmp_path / "ckpt")
    loaded = load_backbone(ModelConfig(family=family, pretrained=str(tmp_path / "ckpt")))
    src.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.pooled(WAV), src.pooled(WAV), atol=1e-5)
    if family != "whisper":
        assert loaded.model.config.layerdrop == 0.0 and loaded.model.config.mask_time_prob == 0.0


def test_whisper_log_mel_matches_the_hf_feature_extractor():
    """The on-device log-mel of the Whisper backbone is HF's WhisperFeatureExtractor (numpy) recipe: same
    filters, STFT, log10 clamp, max − 8 floor and (x + 4) / 4 scaling, at the encoder's input length."""
    import numpy as np
    from transformers import WhisperFeatureExtractor
    from braintune_dist.model.backbone import build_backbone
    bb = build_backbone(ModelConfig(family="whisper", whisper_input="padded"))
    n_samples = 2 * bb.model.config.max_source_positions * bb.hop
    rng = np.random.default_rng(0)
    t = np.arange(int(0.6 * n_samples)) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours, valid = bb._log_mel(torch.from_numpy(wav)[None])
    fe = WhisperFeatureExtractor(feature_size=bb.model.config.num_mel_bins)
    ref = fe(wav, sampling_rate=16000, max_length=n_samples, return_tensors="np").input_features
    assert ours.shape == ref.shape and valid == wav.size // bb.hop
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-4)
