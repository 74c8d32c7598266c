"""Simulated dataset in the exact OpenNeuro ds003020 (LeBel et al. 2023) layout, with known ground truth.

Usage::

    python -m braintune_dist.data.simulate --out data/sim [--sim.participants 4 --sim.stories 8 --sim.trs_per_story 80 --sim.seed 0]

Writes (paths relative to ``--out``)::

    stimuli/<story>.wav                                   real espeak-ng speech, 16 kHz mono, 16 bit
    derivative/TextGrids/<story>.TextGrid                 tier 0 phones, tier 1 words (from audio onset)
    derivative/respdict.json                              {story: n_trs}
    derivative/trfiles/<story>.report                     TR reports, only when sim.scanner_tr != 2.0
    derivative/preprocessed_data/sim01/<story>.hf5        'data' float32 (n_trs - 20, n_voxels), z-scored,
                                                          already trimmed like the real files ([10:-5]);
                                                          wheretheressmoke also 'individual_repeats'
                                                          (n_repeats, n_trs - 20, n_voxels)
    ground_truth/common_space.npz                         vertex_region int8, region_names, surface
                                                          ('fsaverage5'), vertex_index (fsaverage5 vertex),
                                                          vertex_patch (index into meta.json 'patches')
    ground_truth/<subject>/voxel_to_vertex.npy, snr.npy   voxel → vertex (-1 unmapped), planted SNR
    ground_truth/meta.json                                seed, config, categories, stories, per-vertex truth

The story text and speech come from ``speech.py``, the simulated brain from ``brain.py``. Every random
draw uses its own stream keyed by (seed, purpose, participant, story, repeat), so a seed gives
byte-identical wavs and hf5 files (for a given espeak-ng version), and adding a story or participant
leaves the others' audio and noise unchanged.
The dataset is built in a temporary folder next to ``--out`` and renamed into place at the end.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintune_dist.config import ConfigError, parse_cli, to_dict
from braintune_dist.data.simulate import brain, placement, speech, vocabulary
from braintune_dist.data.surface import fsaverage5
from braintune_dist.data.lebel import SOUND_ONSET, TEST_EXTRA_TRIM, TEST_STORY, TR, TRFILE_PAD, TRIM_END, \
    TRIM_START, LebelDataset
from braintune_dist.data.validate import validate
from braintune_dist.data.textgrid import write_textgrid
from braintune_dist.errors import OutputExistsError, UserError
from braintune_dist.io import atomic_dir

# purposes of the random streams (first key after the seed)
_SPACE, _TEXT, _LAYOUT, _NOISE, _PLACE = 1, 2, 3, 4, 5


@dataclass
class SimConfig:
    """Generate a simulated ds003020-layout dataset (real speech, simulated fMRI with ground truth)."""

    seed: int = 0
    """Random seed: the same seed gives byte-identical audio and responses."""
    participants: int = 4
    """Number of participants (sim01, sim02, ...)."""
    stories: int = 8
    """Number of training stories (story01, ...); the test story wheretheressmoke is added."""
    trs_per_story: int = 80
    """respdict TR count of each training story: TR grid of n-5 TRs, hf5 rows n-20, audio (n-5)*2-10 s."""
    scanner_tr: float = TR
    """Seconds between the simulated scanner's triggers. 2.0 = the nominal grid, no TR reports; any other
    value (ds003020's scanner: 2.0045) writes TR reports and samples the brain at those triggers."""
    test_extra_trs: int = 40
    """Extra TRs of the test story, so its evaluation rows data[40:] number as many as a training story's."""
    n_repeats: int = 4
    """Times the test story was heard (individual_repeats); at least 2 for a noise ceiling."""
    n_vertices: int = 600
    """Vertices of the common space shared by all participants."""
    frac_auditory: float = 0.2
    """Fraction of vertices of the acoustic stage (band envelopes and onsets of the audio)."""
    frac_phonetic: float = 0.15
    """Fraction of vertices of the phonetic stage (phone identity from the TextGrid)."""
    frac_lexical: float = 0.15
    """Fraction of vertices of the word-form stage (word identity, unrelated to meaning)."""
    frac_semantic: float = 0.25
    """Fraction of vertices of the semantic stage (continuous semantic space); the rest are null."""
    n_bands: int = 8
    """Log-spaced frequency bands of the acoustic envelope features."""
    snr_auditory: float = 0.8
    """Median planted signal/noise variance ratio of auditory vertices (before participant noise)."""
    snr_phonetic: float = 0.6
    """Median planted SNR of phonetic vertices."""
    snr_lexical: float = 0.5
    """Median planted SNR of lexical vertices."""
    snr_semantic: float = 0.5
    """Median planted SNR of semantic vertices."""
    snr_spread: float = 0.5
    """Log-normal sigma of vertex SNRs around their region median."""
    smoothing_mm: float = 8.0
    """FWHM (sphere mm on fsaverage5) of the Gaussian kernel that makes weights and SNRs smooth within a
    region's patch (0 = independent vertices)."""
    noise_spread: float = 0.25
    """Participant noise SD multiplier is exp(U(-s, s)); their SNRs are divided by its square."""
    noise_ar: float = 0.3
    """AR(1) coefficient of the measurement noise over TRs (0 = white)."""
    coverage_min: float = 0.7
    """Smallest fraction of common-space vertices a participant's voxels cover."""
    coverage_max: float = 0.95
    """Largest fraction of common-space vertices a participant's voxels cover."""
    duplicate_frac: float = 0.1
    """Extra voxels (fraction of covered vertices) mapped to an already covered vertex."""
    unmapped_frac: float = 0.02
    """Noise-only voxels with no vertex (voxel_to_vertex -1), fraction of mapped voxels (at least 1)."""
    nan_voxels: int = 3
    """All-NaN voxels per participant, as in the real hf5 files."""
    voice: str = "en-us"
    """espeak-ng voice."""
    speed: int = 170
    """espeak-ng speaking rate in words per minute."""
    word_gap: float = 0.08
    """Mean pause between words of a sentence, seconds (jittered x U(0.5, 1.5))."""
    sentence_gap: float = 0.5
    """Mean pause between sentences, seconds (jittered x U(0.5, 1.5))."""


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """Independent stream for one purpose; keys like (purpose, participant, story, repeat)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _fractions(cfg: SimConfig) -> dict[str, float]:
    return {name: getattr(cfg, f"frac_{name}") for name in brain.STAGES}


def _snrs(cfg: SimConfig) -> dict[str, float]:
    return {name: getattr(cfg, f"snr_{name}") for name in brain.STAGES}


def check_config(cfg: SimConfig) -> None:
    """Raise ConfigError naming the field whose value cannot make a valid dataset."""
    min_trs = TRFILE_PAD + TRIM_START + TRIM_END + 2     # at least 2 hf5 rows to z-score
    checks = [
        ("participants", cfg.participants >= 1, "must be >= 1"),
        ("stories", cfg.stories >= 1, "must be >= 1"),
        ("trs_per_story", cfg.trs_per_story >= min_trs, f"must be >= {min_trs} (hf5 keeps n-20 rows)"),
        ("test_extra_trs", cfg.trs_per_story + cfg.test_extra_trs >= min_trs + TEST_EXTRA_TRIM,
         f"trs_per_story + test_extra_trs must be >= {min_trs + TEST_EXTRA_TRIM} (test rows [40:])"),
        ("n_repeats", cfg.n_repeats >= 2, "must be >= 2 (noise ceiling)"),
        ("n_vertices", 3 <= cfg.n_vertices <= 20_000, "must be in [3, 20000] (fsaverage5 has 20484 vertices)"),
        ("smoothing_mm", cfg.smoothing_mm >= 0, "must be >= 0"),
        ("frac_auditory", min(_fractions(cfg).values()) >= 0 and sum(_fractions(cfg).values()) <= 1,
         "frac_auditory, frac_phonetic, frac_lexical, frac_semantic must be >= 0 with sum <= 1"),
        ("coverage_min", 0 < cfg.coverage_min <= cfg.coverage_max <= 1, "need 0 < coverage_min <= coverage_max <= 1"),
        ("noise_ar", -1 < cfg.noise_ar < 1, "must be in (-1, 1)"),
        ("nan_voxels", cfg.nan_voxels >= 0, "must be >= 0"),
        ("n_bands", cfg.n_bands >= 1, "must be >= 1"),
        ("scanner_tr", 0.5 <= cfg.scanner_tr <= 10, "must be in [0.5, 10] seconds"),
        ("snr_auditory", min(_snrs(cfg).values()) >= 0, "SNRs must be >= 0"),
    ]
    for name, ok, why in checks:
        if not ok:
            raise ConfigError(f"SimConfig.{name}={getattr(cfg, name)!r}: {why}")


def _write_hf5(path: Path, **arrays: np.ndarray) -> None:
    import h5py
    # track_times=False: no timestamps in the object headers, so a seed gives byte-identical files
    with h5py.File(path, "w") as f:
        for key, arr in arrays.items():
            f.create_dataset(key, data=arr, track_times=False)


def _build(cfg: SimConfig, root: Path) -> dict:
    """Write the whole dataset under ``root`` (a fresh folder); returns the meta dict."""
    deriv = root / "derivative"
    for d in (deriv / "TextGrids", deriv / "preprocessed_data", root / "stimuli", root / "ground_truth"):
        d.mkdir(parents=True)
    train = [f"story{i + 1:02d}" for i in range(cfg.stories)]
    stories = train + [TEST_STORY]
    respdict = {s: cfg.trs_per_story for s in train}
    respdict[TEST_STORY] = cfg.trs_per_story + cfg.test_extra_trs
    (deriv / "respdict.json").write_text(json.dumps(respdict, indent=1))
    if cfg.scanner_tr != TR:
        _write_tr_reports(deriv / "trfiles", respdict, cfg.scanner_tr)
    ds = LebelDataset(root)   # the reader itself gives the TR mid-points, so features line up with it

    words = vocabulary.vocabulary()
    clips = speech.synthesize_vocabulary(words, cfg.voice, cfg.speed)
    embedding = brain.semantic_embedding(cfg.seed, vocabulary.word_category(), vocabulary.word_subcategory())
    centroids = np.stack([brain.label_vector(cfg.seed, "category", str(c), brain.SEMANTIC_DIM)
                          for c in range(len(vocabulary.CATEGORIES))])
    dims = {"auditory": 2 * cfg.n_bands, "phonetic": brain.PHONE_DIM, "lexical": brain.WORD_DIM,
            "semantic": brain.SEMANTIC_DIM}
    region = brain.draw_regions(_rng(cfg.seed, _SPACE), cfg.n_vertices, _fractions(cfg))
    surface = fsaverage5()
    vertex_index, patches = placement.place(_rng(cfg.seed, _PLACE), surface, region, brain.REGION_NAMES)
    space = brain.make_common_space(_rng(cfg.seed, _SPACE, 1), region, dims, _snrs(cfg), cfg.snr_spread, centroids,
                                    patches, cfg.smoothing_mm)

    # ---- stimuli and noise-free vertex signals, story by story
    # stream key of each story: the test story's is fixed, so sim.stories does not change its text or noise
    key = {s: i for i, s in enumerate(train)}
    key[TEST_STORY] = 10_000
    signals = {}          # story → (n_trs - 20, n_vertices) unit-variance signals
    n_words = {}
    sentences: set[str] = set()
    for story in stories:
        n_grid = ds.n_trs(story) - TRFILE_PAD                  # triggers of the TR grid
        duration = n_grid * cfg.scanner_tr - SOUND_ONSET       # audio covers the triggers exactly
        st = speech.compose_story(_rng(cfg.seed, _TEXT, key[story]), clips, duration, cfg.word_gap, cfg.sentence_gap)
        speech.write_wav(ds.audio_path(story), st.audio)
        write_textgrid(st.textgrid(), ds.textgrid_path(story))
        n_words[story] = len(st.words)
        sentences |= set(st.sentences)
        n_fine = int(round(n_grid * cfg.scanner_tr * brain.FINE_HZ))   # fine grid from the first trigger
        feats = brain.stage_features(cfg.seed, st.audio, st.words, st.phones, cfg.n_bands, embedding, SOUND_ONSET,
                                     n_fine)
        rows = np.round((ds.tr_times(story) + SOUND_ONSET) * brain.FINE_HZ).astype(np.int64)
        rows = rows[TRIM_START: n_grid - TRIM_END]             # the real hf5 files are trimmed [10:-5]
        signals[story] = brain.vertex_signals(space, feats, rows)

    # ---- participants: voxel sets, noise, responses
    participants = [f"sim{p + 1:02d}" for p in range(cfg.participants)]
    noise_levels = {}
    for p, sub in enumerate(participants):
        part = brain.make_participant(_rng(cfg.seed, _LAYOUT, p), space, (cfg.coverage_min, cfg.coverage_max),
                                      cfg.duplicate_frac, cfg.unmapped_frac, cfg.nan_voxels, cfg.noise_spread)
        noise_levels[sub] = part.noise_level
        (ds.resp_dir / sub).mkdir()
        for story in stories:
            S = signals[story]
            if story != TEST_STORY:
                Y = brain.participant_responses(_rng(cfg.seed, _NOISE, p, key[story], 0), S, part, cfg.noise_ar)
                _write_hf5(ds.response_path(sub, story), data=Y)
                continue
            # test story: independent noise per repeat, each z-scored; data = z-scored mean of repeats
            reps = np.stack([brain.participant_responses(_rng(cfg.seed, _NOISE, p, key[story], r), S, part,
                                                         cfg.noise_ar)
                             for r in range(cfg.n_repeats)])          # (n_repeats, n_rows, n_voxels)
            mean = reps.astype(np.float64).mean(axis=0)
            _write_hf5(ds.response_path(sub, story), data=brain.zscore_voxels(mean, part.nan_voxels),
                       individual_repeats=reps)
        gt = root / "ground_truth" / sub
        gt.mkdir()
        np.save(gt / "voxel_to_vertex.npy", part.voxel_to_vertex.astype(np.int64))
        np.save(gt / "snr.npy", part.snr.astype(np.float32))

    np.savez(root / "ground_truth" / "common_space.npz", vertex_region=space.region.astype(np.int8),
             region_names=np.array(brain.REGION_NAMES), surface=np.array(surface.name), vertex_index=vertex_index,
             vertex_patch=placement.patch_of(patches, cfg.n_vertices))
    config = to_dict(cfg)
    meta = dict(
        generator="braintune_dist.data.simulate", seed=cfg.seed, config=config,
        categories=vocabulary.CATEGORIES, category_names=list(vocabulary.CATEGORIES),
        subcategories=vocabulary.SUBCATEGORIES, function_words=vocabulary.function_words(),
        vocabulary_size=len(words), n_distinct_sentences=len(sentences),
        stages=list(brain.STAGES), region_stage=brain.STAGE_OF,
        stories=dict(train=train, test=TEST_STORY), respdict=respdict, n_words=n_words,
        participants=participants, participant_noise_level=noise_levels, n_repeats=cfg.n_repeats,
        n_vertices=cfg.n_vertices, region_names=list(brain.REGION_NAMES),
        region_counts={name: int((space.region == r).sum()) for r, name in enumerate(brain.REGION_NAMES)},
        vertex_preferred_category=space.preferred.tolist(), vertex_snr=space.snr.tolist(),
        surface=surface.name, patches=[p.info(surface) for p in patches],
        features=dict(auditory=f"log power in {cfg.n_bands} log-spaced bands 100-7600 Hz and its onsets, z-scored",
                      phonetic=f"fixed random {brain.PHONE_DIM}-d vector per phone, weighted by the share of each "
                               "100 ms bin it covers",
                      lexical=f"fixed random {brain.WORD_DIM}-d vector per word (function words too), the same way",
                      semantic=f"{brain.SEMANTIC_DIM}-d semantic embedding (category + 0.7 subcategory + 0.5 word) "
                               "of content words, the same way",
                      fine_hz=brain.FINE_HZ, hrf="SPM double gamma (6 s, 16 s, 1/6), unit sum",
                      sampling="TR mid-points (LebelDataset.tr_times), rows [10:-5]"),
        response_model="voxel = sqrt(snr) * zscore(signal[vertex]) + AR(1) unit noise, then z-scored per story",
        phone_alignment="espeak-ng --ipa phonemes; each word's duration split equally among its phonemes",
    )
    (root / "ground_truth" / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _write_tr_reports(folder: Path, respdict: dict[str, int], tr: float) -> None:
    """``<story>.report`` per story: n_trs - 5 triggers every ``tr`` s, sound-start 10 s after the first."""
    folder.mkdir()
    for story, n in respdict.items():
        lines = [f"{k * tr:.4f} {'init-trigger' if k == 0 else 'trigger'}" for k in range(n - TRFILE_PAD)]
        lines.insert(1, f"{SOUND_ONSET:.4f} sound-start")        # a line out of time order, as reports allow
        (folder / f"{story}.report").write_text("\n".join(lines) + "\n")


def simulate(cfg: SimConfig, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Generate the dataset described by ``cfg`` at ``out`` and return that path.

    The dataset is written to a temporary sibling folder and renamed to ``out`` only when complete,
    so an interrupted run never leaves a dataset that looks finished.

    Raises
    ------
    OutputExistsError
        ``out`` exists and is not an empty folder, and ``overwrite`` is false.
    ConfigError
        A field has a value that cannot make a valid dataset (the message names it).
    """
    check_config(cfg)
    out = Path(out).absolute()
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; set overwrite true to replace it")
    with atomic_dir(out) as tmp:                   # an interrupted run leaves no dataset that looks finished
        _build(cfg, tmp)
    return out


@dataclass
class SimulateConfig:
    """Generate a simulated ds003020-layout dataset (real speech, simulated fMRI with ground truth)."""

    out: str = "data/sim"
    """Output dataset root; must not exist or be empty unless --overwrite true."""
    overwrite: bool = False
    """Replace an existing non-empty --out (the old one is removed only after the new one is complete)."""
    sim: SimConfig = field(default_factory=SimConfig)
    """What to simulate: participants, stories, vertices, regions, SNRs, voice."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``braintune-simulate``."""
    t0 = time.perf_counter()
    try:
        cfg = parse_cli(SimulateConfig, argv)
        out = simulate(cfg.sim, cfg.out, cfg.overwrite)
    except (UserError, RuntimeError) as exc:           # RuntimeError: espeak-ng missing or failing
        print(f"braintune-simulate: error: {exc}", file=sys.stderr)
        return 2
    summary = validate(LebelDataset(out))
    n_vox = {s: v["n_voxels"] for s, v in summary["subjects"].items()}
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s: {len(summary['stories'])} stories "
          f"({summary['audio_seconds']:.0f} s of audio), voxels per participant {n_vox}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
