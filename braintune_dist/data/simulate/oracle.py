"""Oracle features of a simulated dataset: a "model" whose layer k holds exactly the features of processing
stage k (``brain.STAGES``: acoustic, phonetic, lexical, semantic), rebuilt from the dataset's ground truth.

It has the interface of ``FeatureExtractor`` (``layers``, ``story_features``, ``window_features``), so the
per-layer alignment, the probes and the residual analysis run on it unchanged. An analysis that recovers
the stages must then find, for each region, its own stage's layer best, and put the layers in stage order.
"""
from __future__ import annotations

import json

import numpy as np

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.simulate import brain, vocabulary
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.interp import align_to_trs


class OracleFeatures:
    """Stage features of a simulated dataset as layers 0..3 (``brain.STAGES`` order).

    Parameters
    ----------
    ds : LebelDataset of a simulated dataset (reads ``ground_truth/meta.json`` for the seed and bands)
    cfg : FeatureConfig  (delays and Lanczos window of the TR alignment)
    """

    def __init__(self, ds: LebelDataset, cfg: FeatureConfig | None = None):
        meta = json.loads((ds.root / "ground_truth" / "meta.json").read_text())
        self.seed, self.n_bands = int(meta["seed"]), int(meta["config"]["n_bands"])
        self.cfg = cfg or FeatureConfig()
        self.layers = list(range(len(brain.STAGES)))
        self.embedding = brain.semantic_embedding(self.seed, vocabulary.word_category(),
                                                  vocabulary.word_subcategory())

    def _fine(self, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """(bin start times from audio onset (n_fine,), layer → (n_fine, d)) on the simulator's fine grid."""
        wav, grid = ds.load_audio(story), ds.load_textgrid(story)
        onset = ds.cfg.sound_onset
        n_fine = int(round((len(wav) / 16_000 + onset) * brain.FINE_HZ))
        feats = brain.stage_features(self.seed, wav, grid.tier("words").words(ds.cfg.non_words),
                                     grid.tier("phones").labelled(), self.n_bands, self.embedding, onset, n_fine)
        return np.arange(n_fine) / brain.FINE_HZ - onset, {k: feats[s] for k, s in enumerate(brain.STAGES)}

    def story_features(self, ds: LebelDataset, story: str) -> dict[int, np.ndarray]:
        """Layer → array of shape (n_rows, d * n_delays) aligned with the responses of ``story``."""
        starts, feats = self._fine(ds, story)
        return align_to_trs(starts + 0.5 / brain.FINE_HZ, feats, ds, story, self.cfg)

    def window_features(self, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """(bin end times (n,), layer → (n, d)): the features of each 100 ms bin after audio onset."""
        starts, feats = self._fine(ds, story)
        keep = starts >= 0
        return starts[keep] + 1.0 / brain.FINE_HZ, {k: f[keep] for k, f in feats.items()}
