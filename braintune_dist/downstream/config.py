"""Config of the downstream stage: clip features, linear probes, transcription and word-pair preference
(no torch imported here: job configs and ``--help`` read it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import PositiveInt

from braintune_dist.config import ConfigError
from braintune_dist.downstream.synthetic_plan import SuiteSettings
from braintune_dist.evaluate.compute import ComputeSettings


@dataclass
class ClipFeatureSettings:
    """How one clip becomes one vector per layer."""

    layers: list[int] = field(default_factory=list)
    """hidden_states indices probed (0 = the convolutional/embedding output); [] = every transformer layer. The
    papers' 12-layer models: [2, 5, 7, 8, 10, 11, 12]."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Inference precision of the backbone (part of the cache key)."""
    device: str = "auto"
    """torch device of the feature actors: auto = cuda when available, else cpu."""
    chunk: PositiveInt = 64
    """Clips per unit of the actor pool (one cache file each)."""
    cache_dir: str = ""
    """Feature cache (shared storage on a cluster); '' = <out_dir>/feature_cache."""


@dataclass
class ProbeSettings:
    """The linear probe: one ``nn.Linear`` on a layer's mean-pooled, standardised representation."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Probe seeds (initialisation and mini-batch order); each is scored once on the test split."""
    lrs: list[float] = field(default_factory=lambda: [1.0e-3, 1.0e-2])
    """Adam learning rates tried; the one chosen is the best on the validation split."""
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1.0e-2])
    """L2 penalties (Adam weight_decay) tried, chosen on the validation split."""
    max_epochs: PositiveInt = 100
    """Epochs at most; the epoch kept is the best on the validation split."""
    patience: PositiveInt = 10
    """Stop a fit after this many epochs without a better validation score."""
    batch_size: int = 128
    """Clips per Adam step (0 = the whole training split, as the released probe code)."""
    select_on: Literal["f1_macro", "f1_micro", "accuracy"] = "f1_macro"
    """Validation score that picks the learning rate, the penalty and the epoch."""

    def __post_init__(self):
        if not self.seeds:
            raise ConfigError("probe.seeds: empty; give at least one probe seed (the papers' protocol: 3 or more)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"probe.seeds: {list(self.seeds)} repeats a seed (a repeat is not a replicate)")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError(f"probe.lrs: {list(self.lrs)}; give positive learning rates")
        if any(wd < 0 for wd in self.weight_decays) or not self.weight_decays:
            raise ConfigError(f"probe.weight_decays: {list(self.weight_decays)}; give non-negative penalties")
        if self.batch_size < 0:
            raise ConfigError(f"probe.batch_size: {self.batch_size}; 0 (full batch) or a positive size")


@dataclass
class DatasetSource:
    """A real downstream dataset, read in the layout it is distributed in."""

    kind: Literal["timit_phonemes", "timit_sentence_type", "speech_commands", "crema_d", "slurp_action",
                  "slurp_intent"]
    """Which reader and label: TIMIT phoneme presence (39 phones) or sentence type (SA/SI/SX); Speech Commands v2
    (35 words); CREMA-D (6 emotions); SLURP action or intent."""
    root: str
    """The dataset's folder (TIMIT: the one holding TRAIN/ and TEST/; Speech Commands: speech_commands_v0.02/;
    CREMA-D: the one holding AudioWAV/; SLURP: the one holding dataset/slurp/ and slurp_real/)."""


@dataclass
class AsrSettings:
    """Transcription check of Whisper encoders: the original decoder on the tuned encoder's output."""

    enabled: bool = True
    """Transcribe with every Whisper model (skipped, with a note, for other families)."""
    task: str = "sentence_type"
    """The synthetic task whose test-split sentences are transcribed (held-out speakers)."""
    max_clips: int = 60
    """Sentences transcribed per model (the first of the test split; 0 = all)."""
    max_tokens: PositiveInt = 96
    """Greedy decoding stops here at the latest."""


@dataclass
class WordPreferenceSettings:
    """Semantic–phonetic preference of word representations (isolated words, several voices)."""

    enabled: bool = True
    """Compute the per-layer preference curve of every model."""
    voices: list[str] = field(default_factory=lambda: ["en-us", "en-us+f3", "en-us+m3"])
    """espeak-ng voices each word is spoken in (distances are taken within a voice, then averaged); one accent,
    that of the phonemes the pairs are found from."""
    out: str = "data/downstream/words"
    """Folder of the isolated-word audio (made once, reused)."""
    n_boot: PositiveInt = 1000
    """Bootstrap resamples of the targets for the confidence intervals."""


@dataclass
class DownstreamSettings:
    """What the downstream report measures of every model: probes per layer on each task, transcription, and
    the semantic–phonetic preference of word representations."""

    enabled: bool = True
    """Run the downstream report (in the comparison job: off unless set)."""
    synthetic: bool = True
    """Probe the offline espeak-ng suite (made once under suite.out, reused)."""
    suite: SuiteSettings = field(default_factory=SuiteSettings)
    """The synthetic suite: voices, speaker splits, sizes per task, seed."""
    tasks: list[str] = field(default_factory=list)
    """Synthetic tasks probed ([] = all: commands, phonemes, meaning, sentence_type)."""
    datasets: list[DatasetSource] = field(default_factory=list)
    """Real datasets probed as well (TIMIT, Speech Commands v2, CREMA-D, SLURP in their own layouts)."""
    features: ClipFeatureSettings = field(default_factory=ClipFeatureSettings)
    """Layers probed and the clip feature cache."""
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    """Probe seeds, learning rates, penalties, epochs (chosen on validation)."""
    asr: AsrSettings = field(default_factory=AsrSettings)
    """Whisper transcription check."""
    preference: WordPreferenceSettings = field(default_factory=WordPreferenceSettings)
    """Semantic–phonetic preference curve."""
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    """Feature actors and probe tasks on Ray, or this process."""

    def __post_init__(self):
        if self.enabled and not self.synthetic and not self.datasets:
            raise ConfigError("downstream: nothing to probe (synthetic is false and datasets is empty)")
