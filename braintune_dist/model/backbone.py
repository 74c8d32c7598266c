"""Speech backbones (HF wav2vec2 / HuBERT / Whisper encoder): build, normalise input, run with hidden states.

One wrapper serves training (mean-pooled last layer → head) and evaluation (per-layer features).
Waveform normalisation runs on the model's device (the original brain-tuning code ran the HF processor on CPU numpy inside
``forward``, a GPU→CPU→GPU copy per step).

* wav2vec2/HuBERT: per-sample zero-mean/unit-variance when the checkpoint's feature extractor has
  ``do_normalize`` (random-init models: True). ``layerdrop`` and SpecAugment time masking are forced
  off (layerdrop skips whole layers in train mode and leaves LoRA params unused).
* Whisper encoder: log-mel (the ``WhisperFeatureExtractor`` recipe in torch, on device) of the audio,
  either zero-padded to the model's fixed ``2 * max_source_positions`` frames (30 s) or at its own length
  (``whisper_input``); the output frames that real input reaches are tracked so pooling and "last frame"
  features ignore the padding. CTranslate2 Whisper folders are imported first (``model/ct2.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from braintune_dist.experiment import compat
from braintune_dist.model.config import ModelConfig

SAMPLE_RATE = 16_000

# Tiny architectures for tests and the CPU demo (random init, ~0.1-0.2 M params).
TINY_SPEECH = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                   conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
TINY_WHISPER = dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                    decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=128,
                    num_mel_bins=80, max_source_positions=1500)


def _hf_classes(family: str):
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WhisperConfig,
                              WhisperModel)
    return {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel),
            "whisper": (WhisperConfig, WhisperModel)}[family]


class Backbone(nn.Module):
    """A speech encoder that takes raw 16 kHz waveforms ``(batch, n_samples)``.

    ``forward(wav)`` returns ``(hidden_states, n_valid)``: a tuple of ``n_layers + 1`` tensors of
    shape ``(batch, n_frames, hidden)`` (index 0 = CNN/embedding output, as HF numbers them) and the
    number of output frames that real input reaches (``n_frames`` except for padded Whisper input).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        cfg_cls, model_cls = _hf_classes(cfg.family)
        no_drop = dict(layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0)
        if cfg.pretrained:
            model = model_cls.from_pretrained(cfg.pretrained, **({} if cfg.family == "whisper" else no_drop))
            self.do_normalize = self._pretrained_do_normalize(cfg.pretrained)
        else:
            base = dict(TINY_WHISPER if cfg.family == "whisper" else TINY_SPEECH) if cfg.size == "tiny" else {}
            if cfg.family != "whisper":
                base.update(no_drop)
            base.update(cfg.overrides)
            torch.manual_seed(cfg.seed)
            model = model_cls(cfg_cls(**base))
            self.do_normalize = True
        if cfg.family == "whisper":
            model = model.get_encoder()
            for p in [*model.conv1.parameters(), *model.conv2.parameters(), *model.embed_positions.parameters()]:
                p.requires_grad_(not cfg.freeze_frontend)    # frozen front end, as in the original brain-tuning code
            from transformers import WhisperFeatureExtractor
            fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
            self.register_buffer("mel_filters", torch.from_numpy(fe.mel_filters).float(), persistent=False)
            self.register_buffer("hann", torch.hann_window(fe.n_fft), persistent=False)
            self.n_fft, self.hop = fe.n_fft, fe.hop_length
        else:
            if cfg.freeze_frontend:
                compat.freeze_feature_encoder(model)           # frozen CNN front end (wav2vec2 and HuBERT)
        self.model = model

    @staticmethod
    def _pretrained_do_normalize(path: str) -> bool:
        try:
            from transformers import AutoFeatureExtractor
            return bool(getattr(AutoFeatureExtractor.from_pretrained(path), "do_normalize", True))
        except (OSError, ValueError):
            return True

    @property
    def hidden_size(self) -> int:
        c = self.model.config
        return c.d_model if self.cfg.family == "whisper" else c.hidden_size

    @property
    def n_layers(self) -> int:
        c = self.model.config
        return c.encoder_layers if self.cfg.family == "whisper" else c.num_hidden_layers

    # ------------------------------------------------------------------ input
    def _log_mel(self, wav: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Whisper log-mel ``(batch, n_mels, n_frames)`` of ``wav`` (batch, n_samples) and the number of
        mel frames carrying real audio. ``n_frames`` is the encoder's fixed length when padded, else the
        input's own length rounded up to even (conv2 has stride 2)."""
        max_frames = 2 * self.model.config.max_source_positions
        if wav.shape[1] > max_frames * self.hop:         # jobs check their windows first (preflight.window_problems)
            raise ValueError(f"Whisper takes at most {max_frames * self.hop / SAMPLE_RATE:.1f} s of audio, got "
                             f"{wav.shape[1] / SAMPLE_RATE:.1f} s")
        valid = wav.shape[1] // self.hop
        n_frames = max_frames if self.cfg.whisper_input == "padded" else min(max_frames, 2 * -(-valid // 2))
        wav = nn.functional.pad(wav.float(), (0, n_frames * self.hop - wav.shape[1]))
        stft = torch.stft(wav, self.n_fft, self.hop, window=self.hann, return_complex=True)
        mag = (stft[..., :-1].abs() ** 2).contiguous()                   # (batch, n_freq, n_frames)
        log_spec = torch.clamp(self.mel_filters.T @ mag, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0, valid

    def _whisper(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """HF ``WhisperEncoder.forward`` for any even number of mel frames ≤ its fixed length (HF insists on
        exactly that length): ``n_layers + 1`` hidden states, the last one after the final layer norm."""
        enc = self.model
        x = nn.functional.gelu(enc.conv2(nn.functional.gelu(enc.conv1(feats)))).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]                 # (batch, n_frames / 2, d_model)
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        hidden = [x]
        for layer in enc.layers:
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
            hidden.append(x)
        hidden[-1] = enc.layer_norm(x)
        return tuple(hidden)

    def forward(self, wav: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], int]:
        if self.cfg.family == "whisper":
            feats, valid = self._log_mel(wav)
            hidden = self._whisper(feats.to(self.model.conv1.weight.dtype))
            return hidden, max(1, (valid + 1) // 2)                       # conv2 has stride 2
        x = wav.float()
        if self.do_normalize:                                             # per-sample, on device
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        dtype = next(self.model.parameters()).dtype
        out = self.model(x.to(dtype), output_hidden_states=True)
        return out.hidden_states, out.hidden_states[-1].shape[1]

    def pooled(self, wav: torch.Tensor) -> torch.Tensor:
        """Mean over the real output frames of the last layer, shape (batch, hidden)."""
        hs, n_valid = self(wav)
        return hs[-1][:, :n_valid].mean(dim=1)


def n_layers_of(cfg: ModelConfig) -> int:
    """Transformer layers of the backbone ``cfg`` describes, from its HF config alone (no weights)."""
    cfg_cls, _ = _hf_classes(cfg.family)
    if cfg.pretrained:
        c = cfg_cls.from_pretrained(cfg.pretrained)
    else:
        base = dict(TINY_WHISPER if cfg.family == "whisper" else TINY_SPEECH) if cfg.size == "tiny" else {}
        c = cfg_cls(**{**base, **cfg.overrides})
    return c.encoder_layers if cfg.family == "whisper" else c.num_hidden_layers


def max_input_seconds(cfg: ModelConfig) -> float:
    """Longest audio a Whisper model takes (its fixed input: ``2 * max_source_positions`` mel frames of 10 ms)."""
    cfg_cls, _ = _hf_classes("whisper")
    c = cfg_cls.from_pretrained(cfg.pretrained) if cfg.pretrained else cfg_cls(**{**TINY_WHISPER, **cfg.overrides})
    return 2 * c.max_source_positions * 160 / SAMPLE_RATE


def build_backbone(cfg: ModelConfig) -> Backbone:
    """Build the backbone described by ``cfg`` (random init from a config, or a local/hub checkpoint)."""
    return Backbone(cfg)
