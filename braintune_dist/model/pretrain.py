"""Phone-recognition pretraining of a small random-init speech backbone on the dataset's own speech.

Brain-tuning starts from a *pretrained* speech model: the original brain-tuning code tune wav2vec2/HuBERT checkpoints that
already map sound to phones. A tiny random-init model (CPU demo, tests; no checkpoint can be downloaded
here) has no such representation, and a few minutes of brain-tuning cannot build one from ~1000 noisy
fMRI targets (measured: semantic alignment does not move). This module gives the tiny model the stage the
real checkpoints come with: frame-level phone classification from the TextGrid phone tier of the
*training* stories (audio and phone labels only: no fMRI responses, never the validation or test story's
labels for training), written as an ordinary HF checkpoint that ``model.pretrained`` loads.

Frames: wav2vec2/HuBERT output one frame per ``prod(conv_stride)`` samples (320 = 20 ms); frame ``k``
is labelled with the phone heard at ``k × 20 ms`` (0 = silence/unlabelled).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from braintune_dist.model.backbone import build_backbone
from braintune_dist.model.config import PretrainConfig
from braintune_dist.config import ConfigError, to_dict
from braintune_dist.data.fingerprint import differences
from braintune_dist.data.validate import check_tiers
from braintune_dist.data.lebel import SAMPLE_RATE, DataConfig, LebelDataset
from braintune_dist.errors import UserError
from braintune_dist.io import atomic_dir, file_digest
from braintune_dist.tracking import flatten

META_FILE = "pretrain.json"


class PretrainError(UserError):
    """A pretraining input or output that cannot be used; the message names it."""


def _phone(label: str) -> str:
    """ARPAbet stress digits and case removed (real TextGrids: 'AH0'); IPA labels pass unchanged."""
    return re.sub(r"\d+$", "", label.strip()).upper()


def frame_labels(ds: LebelDataset, story: str, n_frames: int, hop: int, vocab: dict[str, int] | None,
                 grow: bool) -> np.ndarray:
    """Phone index of each backbone frame of ``story``, int64 (n_frames,); 0 = silence.

    ``grow``: add unseen phones to ``vocab``; else they get -100 (ignored by the loss and accuracy).
    """
    lab = np.zeros(n_frames, np.int64)
    rate = SAMPLE_RATE / hop                                          # frames per second (50 for 320)
    for iv in ds.load_textgrid(story).tier("phones").labelled():
        p = _phone(iv.text)
        if p not in vocab:
            if not grow:
                lab[int(iv.xmin * rate): int(math.ceil(iv.xmax * rate))] = -100
                continue
            vocab[p] = len(vocab)
        lab[int(iv.xmin * rate): int(math.ceil(iv.xmax * rate))] = vocab[p]
    return lab


class _Windows:
    """Random crops of whole stories with their frame labels (audio float32 (n,), labels (n // hop,))."""

    def __init__(self, stories: list[tuple[np.ndarray, np.ndarray]], n_samples: int, hop: int, seed: int):
        self.stories, self.n, self.hop = stories, n_samples, hop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(size):
            audio, lab = self.stories[self.rng.integers(len(self.stories))]
            start = self.rng.integers(0, max(len(audio) - self.n, 1)) // self.hop * self.hop   # frame aligned
            a, f = audio[start: start + self.n], lab[start // self.hop: (start + self.n) // self.hop]
            xs.append(np.pad(a, (0, self.n - len(a))))                  # zero-padded past the story end
            ys.append(np.pad(f, (0, self.n // self.hop - len(f))))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))   # (B, n), (B, n // hop)


def _logits(backbone, clf, x: torch.Tensor, n_frames: int) -> torch.Tensor:
    hs, _ = backbone(x)
    h = hs[-1][:, :n_frames]                                          # (B, frames, hidden)
    return clf(h)                                                     # (B, frames, n_phones)


def _accuracy(backbone, clf, batches) -> float:
    """Frame accuracy over labelled (non-silence, known-phone) frames."""
    hit = tot = 0
    with torch.no_grad():
        for x, y in batches:
            pred = _logits(backbone, clf, x, y.shape[1]).argmax(-1)   # the CNN may give one frame fewer
            y = y[:, :pred.shape[1]]
            m = y > 0
            hit, tot = hit + int((pred[m] == y[m]).sum()), tot + int(m.sum())
    return hit / max(tot, 1)


def _fingerprint(cfg: PretrainConfig, data: DataConfig, ds: LebelDataset) -> dict:
    """What the checkpoint depends on: the training settings, the data settings but the root, and the content
    of the audio and TextGrid files it reads (so a moved dataset matches and a changed one does not)."""
    d = to_dict(cfg)
    for k in ("out", "enabled", "overwrite", "eval_every"):
        d.pop(k)
    d["data"] = {k: v for k, v in to_dict(data).items() if k != "root"}
    d["data"]["subjects"] = d["data"].pop("participants")   # pretrain.json's key: earlier checkpoints still match
    split = ds.split()
    d["inputs"] = {f"{kind}/{s}": digest for s in split["train"] + split["val"]
                   for kind, digest in (("audio", ds.audio_digest(s)), ("textgrid", file_digest(ds.textgrid_path(s))))}
    return d


def pretrain(cfg: PretrainConfig, data: DataConfig, log=print, ds: LebelDataset | None = None) -> Path:
    """Train on the training stories of ``data`` (their audio and TextGrid phones; the validation stories score
    accuracy) and write the checkpoint (atomically: temp directory, then rename); returns ``out``. ``ds``: the
    dataset ``data`` describes, when the caller has it open.

    A checkpoint already at ``out`` made with the same config is reused; one made with another
    config raises ``PretrainError`` unless ``overwrite``.
    """
    out = Path(cfg.out)
    ds = ds or LebelDataset(data.root, data)
    if cfg.model.family == "whisper":
        raise PretrainError("PretrainConfig.model.family: phone pretraining supports wav2vec2 and hubert, "
                            "not whisper (use a Whisper checkpoint via model.pretrained)")
    if cfg.model.pretrained:
        raise PretrainError("PretrainConfig.model.pretrained must be empty: pretraining starts from random init")
    if (out / META_FILE).is_file() and not cfg.overwrite:
        old = json.loads((out / META_FILE).read_text())
        now = _fingerprint(cfg, data, ds)
        if old.get("fingerprint") == now:
            log(f"[pretrain] reusing {out} (same config and data; val phone accuracy {old['val_accuracy']:.2f})")
            return out
        raise PretrainError(f"{out} holds a checkpoint pretrained with another config or data "
                            f"({differences(flatten(old.get('fingerprint') or {}), flatten(now), 5, lambda k, a, b: f'{k}: {a} → {b}')}); set "
                            f"--pretrain.overwrite true or choose another --pretrain.out")
    if out.exists() and any(out.iterdir()) and not (out / META_FILE).is_file() and not cfg.overwrite:
        raise PretrainError(f"{out} exists and is not a pretraining checkpoint; choose another out")

    split = ds.split()
    check_tiers(ds, split["train"] + split["val"], ["phones"], "phone pretraining (its frame labels)")
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(dataclasses.replace(cfg.model, freeze_frontend=False))
    hop = int(np.prod(backbone.model.config.conv_stride))             # samples per output frame
    n = int(round(cfg.window * SAMPLE_RATE)) // hop * hop
    vocab: dict[str, int] = {"": 0}

    def load(story: str, grow: bool) -> tuple[np.ndarray, np.ndarray]:
        audio = ds.load_audio(story).astype(np.float32)
        return audio, frame_labels(ds, story, len(audio) // hop, hop, vocab, grow)

    train = _Windows([load(s, True) for s in split["train"]], n, hop, cfg.seed)
    # accuracy on the val stories (held out), else on fixed crops of the training stories
    held = [load(s, False) for s in split["val"]] or train.stories
    val_batches = [_Windows(held, n, hop, cfg.seed + 1).batch(cfg.batch_size) for _ in range(4)]
    clf = torch.nn.Linear(backbone.hidden_size, len(vocab))
    opt = torch.optim.AdamW([*backbone.parameters(), *clf.parameters()], lr=cfg.lr)
    log(f"[pretrain] {cfg.model.family} phone recognition: {len(vocab) - 1} phones, "
        f"{len(split['train'])} stories, {cfg.steps} steps × {cfg.batch_size} windows of {cfg.window:g} s")
    t0, history = time.time(), []
    backbone.train()
    for step in range(1, cfg.steps + 1):
        x, y = train.batch(cfg.batch_size)
        logits = _logits(backbone, clf, x, y.shape[1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[:, :logits.shape[1]].flatten(),
                                                 ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            backbone.eval()
            acc = _accuracy(backbone, clf, val_batches)
            backbone.train()
            history.append(dict(step=step, loss=float(loss.detach()), val_accuracy=acc))
            log(f"[pretrain] step {step}: loss {float(loss.detach()):.3f}, val phone accuracy {acc:.3f} "
                f"({time.time() - t0:.0f} s)")

    with atomic_dir(out) as tmp:               # the old checkpoint stays in place until the new one is whole
        backbone.model.save_pretrained(tmp)
        # the feature-extractor file tells Backbone (and HF) to normalise each waveform, as during pretraining
        (tmp / "preprocessor_config.json").write_text(json.dumps(dict(
            feature_extractor_type="Wav2Vec2FeatureExtractor", do_normalize=True, sampling_rate=SAMPLE_RATE,
            feature_size=1, padding_value=0.0, return_attention_mask=False), indent=1))
        (tmp / META_FILE).write_text(json.dumps(dict(
            fingerprint=_fingerprint(cfg, data, ds), phones=list(vocab), history=history, seconds=time.time() - t0,
            val_accuracy=history[-1]["val_accuracy"], chance=1 / max(len(vocab) - 1, 1)), indent=1))
    log(f"[pretrain] wrote {out} in {time.time() - t0:.0f} s")
    return out


def with_pretrained(fit, pre: PretrainConfig, log=print, ds: LebelDataset | None = None):
    """The fit config ``fit`` with ``model.pretrained`` set to the pretraining output when ``pre.enabled``
    (pretraining on ``fit.data``, open as ``ds`` when given, first if needed); else ``fit`` unchanged."""
    if not pre.enabled:
        return fit
    if fit.model.pretrained and Path(fit.model.pretrained).resolve() == Path(pre.out).resolve():
        return fit                                                    # already applied
    if fit.model.pretrained:
        raise ConfigError("fit.model.pretrained and pretrain.enabled are both set: choose one starting point")
    if fit.model.family != pre.model.family:
        raise ConfigError(f"fit.model.family={fit.model.family!r} but pretrain.model.family={pre.model.family!r}")
    out = pretrain(pre, fit.data, log, ds)
    return dataclasses.replace(fit, model=dataclasses.replace(fit.model, pretrained=str(out.resolve())))
