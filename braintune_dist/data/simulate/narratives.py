"""Simulated dataset in the Narratives (OpenNeuro ds002345) layout, surface GIfTI on fsaverage5.

Usage::

    python -m braintune_dist.data.simulate.narratives --out data/sim_narratives [--sim.participants 4 --sim.seed 0]

Writes (paths relative to ``--out``)::

    participants.tsv, task-<story>_bold.json (RepetitionTime 1.5), code/scan_exclude.json (one scan)
    sub-XXX/func/sub-XXX_task-<story>_events.tsv          music row, then the story row (seconds)
    derivatives/afni-nosmooth/sub-XXX/func/sub-XXX_task-<story>_space-fsaverage5_hemi-{L,R}_desc-clean.func.gii
                                                          one float32 darray per TR, 10,242 vertices each
    stimuli/<story>_audio.wav                             espeak-ng speech, 16 kHz (the story only, no music)
    stimuli/gentle/<story>/align.json                     Gentle-style words and phones (+ one not-found word)
    ground_truth/meta.json, ground_truth/vertex_region.npy   region of every fsaverage5 vertex (0 = null)

The brain is the ds003020 simulator's (``brain.py``): stage regions placed on fsaverage5 (``placement.py``),
each driven by its stage's features of the story audio and words, convolved with the HRF and sampled at the
scan's TR mid-points; every other vertex is noise. The music is silent to the brain (no features), and the
signal is planted in every participant at the same vertices, so the leave-one-out ISC is high in the
stage regions and ~0 elsewhere. Every story is heard once (no repeats), as in Narratives.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintune_dist.config import ConfigError, parse_cli
from braintune_dist.data.narratives import INITIAL_TRIM
from braintune_dist.data.simulate import brain, placement, speech, vocabulary
from braintune_dist.data.surface import fsaverage5
from braintune_dist.errors import OutputExistsError, UserError
from braintune_dist.io import atomic_dir

_SPACE, _TEXT, _NOISE, _PLACE = 11, 12, 13, 14          # random stream purposes (distinct from dataset.py's)


@dataclass
class NarrSimConfig:
    """Generate a simulated Narratives-layout dataset (real speech, simulated surface fMRI)."""

    seed: int = 0
    """Random seed."""
    participants: int = 4
    """Participants sub-001 ...; every one hears every story."""
    stories: int = 2
    """Stories (tasks) narr01 ...."""
    story_trs: int = 40
    """Story duration in TRs (events.tsv duration); the reader keeps story_trs - 6 of them."""
    music_trs: int = 8
    """TRs of music before the story (its events.tsv row starts at 0 and lasts music_trs - 1 TRs)."""
    tail_trs: int = 4
    """TRs scanned after the story ends."""
    tr: float = 1.5
    """RepetitionTime in seconds (sidecar)."""
    n_vertices: int = 600
    """Driven plus null vertices placed on fsaverage5 (the rest of the 20,484 are null too)."""
    snr: float = 1.0
    """Median planted signal/noise variance ratio of every stage region."""
    exclude: bool = True
    """List the last participant's scan of the last story in code/scan_exclude.json."""


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _write_gifti(path: Path, Y: np.ndarray) -> None:
    """(n_trs, n_vertices) → one float32 data array per TR, as the Narratives files hold them."""
    import nibabel as nib
    img = nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(row.astype(np.float32), intent="NIFTI_INTENT_NONE",
                                                                  datatype="NIFTI_TYPE_FLOAT32") for row in Y])
    nib.save(img, path)


def _gentle(st: speech.Story, clips: dict, lost: str) -> dict:
    """Gentle align.json of a story: every spoken word aligned, plus ``lost`` not found in the audio."""
    words = []
    for w in st.words:
        phones = clips[w.text].phones
        step = (w.xmax - w.xmin) / len(phones)
        words.append(dict(word=w.text, alignedWord=w.text, case="success", start=round(w.xmin, 3),
                          end=round(w.xmax, 3), phones=[dict(phone=p, duration=round(step, 3)) for p in phones]))
    words.insert(len(words) // 2, dict(word=lost, case="not-found-in-audio"))
    return dict(transcript=" ".join(w["word"] for w in words), words=words)


def _build(cfg: NarrSimConfig, root: Path) -> dict:
    surface = fsaverage5()
    stories = [f"narr{i + 1:02d}" for i in range(cfg.stories)]
    subs = [f"sub-{p + 1:03d}" for p in range(cfg.participants)]
    words = vocabulary.vocabulary()
    clips = speech.synthesize_vocabulary(words)
    embedding = brain.semantic_embedding(cfg.seed, vocabulary.word_category(), vocabulary.word_subcategory())
    centroids = np.stack([brain.label_vector(cfg.seed, "category", str(c), brain.SEMANTIC_DIM)
                          for c in range(len(vocabulary.CATEGORIES))])
    fractions = dict(auditory=0.2, phonetic=0.15, lexical=0.15, semantic=0.25)
    n_bands = 8
    dims = dict(auditory=2 * n_bands, phonetic=brain.PHONE_DIM, lexical=brain.WORD_DIM, semantic=brain.SEMANTIC_DIM)
    region = brain.draw_regions(_rng(cfg.seed, _SPACE), cfg.n_vertices, fractions)
    vertex_index, patches = placement.place(_rng(cfg.seed, _PLACE), surface, region, brain.REGION_NAMES)
    space = brain.make_common_space(_rng(cfg.seed, _SPACE, 1), region, dims, {s: cfg.snr for s in brain.STAGES},
                                    0.3, centroids, patches, 8.0)
    full_region = np.zeros(surface.n_vertices, np.int8)
    full_region[vertex_index] = region
    gain = np.zeros(surface.n_vertices)
    gain[vertex_index] = np.sqrt(space.snr)

    for d in ("code", "stimuli/gentle", "ground_truth"):
        (root / d).mkdir(parents=True)
    onset = cfg.music_trs * cfg.tr
    n_scan = cfg.music_trs + cfg.story_trs + cfg.tail_trs
    for k, story in enumerate(stories):
        (root / f"task-{story}_bold.json").write_text(json.dumps({"RepetitionTime": cfg.tr, "TaskName": story}))
        st = speech.compose_story(_rng(cfg.seed, _TEXT, k), clips, cfg.story_trs * cfg.tr)
        speech.write_wav(root / "stimuli" / f"{story}_audio.wav", st.audio)
        (root / "stimuli" / "gentle" / story).mkdir()
        (root / "stimuli" / "gentle" / story / "align.json").write_text(
            json.dumps(_gentle(st, clips, "unheard"), indent=1))
        n_fine = int(round(n_scan * cfg.tr * brain.FINE_HZ))
        feats = brain.stage_features(cfg.seed, st.audio, st.words, st.phones, n_bands, embedding, onset, n_fine)
        rows = np.round(((np.arange(n_scan) + 0.5) * cfg.tr) * brain.FINE_HZ).astype(np.int64)
        V = brain.vertex_signals(space, feats, rows)
        # unit variance over the TRs the reader keeps: the sound's onset after the silent music makes a large
        # transient in the trimmed TRs that would otherwise leave the acoustic signal weak in the kept ones
        kept = slice(cfg.music_trs + INITIAL_TRIM, cfg.music_trs + cfg.story_trs)
        sd = V[kept].std(axis=0)
        V = np.divide(V - V[kept].mean(axis=0), sd, out=np.zeros_like(V), where=sd > 1e-9)
        S = np.zeros((n_scan, surface.n_vertices))
        S[:, vertex_index] = V
        for p, sub in enumerate(subs):
            func = root / sub / "func"
            func.mkdir(parents=True, exist_ok=True)
            events = ["onset\tduration\ttrial_type\tstim_file",
                      f"0.0\t{(cfg.music_trs - 1) * cfg.tr}\tmusic\tmusic.wav",
                      f"{onset}\t{cfg.story_trs * cfg.tr}\tstory\t{story}_audio.wav"]
            (func / f"{sub}_task-{story}_events.tsv").write_text("\n".join(events) + "\n")
            noise = brain.ar1_noise(_rng(cfg.seed, _NOISE, p, k), n_scan, surface.n_vertices, 0.3)
            Y = brain.zscore_voxels(gain * S + noise, np.zeros(surface.n_vertices, bool))
            out = root / "derivatives" / "afni-nosmooth" / sub / "func"
            out.mkdir(parents=True, exist_ok=True)
            for h, part in zip("LR", surface.split(Y.T).values()):
                _write_gifti(out / f"{sub}_task-{story}_space-fsaverage5_hemi-{h}_desc-clean.func.gii", part.T)
    rows = ["participant_id\tage\tsex\ttask\tcondition\tcomprehension"]
    rows += [f"{s}\t25\tF\t{','.join(stories)}\t{','.join(['n/a'] * len(stories))}\tn/a" for s in subs]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    excluded = {stories[-1]: {subs[-1]: [f"{subs[-1]}_task-{stories[-1]}"]}} if cfg.exclude else {}
    (root / "code" / "scan_exclude.json").write_text(json.dumps(excluded, indent=1))
    np.save(root / "ground_truth" / "vertex_region.npy", full_region)
    meta = dict(generator="braintune_dist.data.simulate.narratives", config=cfg.__dict__, stories=stories,
                participants=subs, excluded=excluded, region_names=list(brain.REGION_NAMES), surface=surface.name,
                story_onset_trs=cfg.music_trs, kept_trs=cfg.story_trs - INITIAL_TRIM,
                patches=[pt.info(surface) for pt in patches])
    (root / "ground_truth" / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def simulate_narratives(cfg: NarrSimConfig, out, overwrite: bool = False) -> Path:
    """Write the dataset described by ``cfg`` at ``out`` (built in a temporary sibling, renamed when complete)."""
    if cfg.participants < 2 or cfg.stories < 1 or cfg.story_trs <= INITIAL_TRIM + 1 or cfg.music_trs < 2:
        raise ConfigError(f"NarrSimConfig: need participants >= 2, stories >= 1, story_trs > {INITIAL_TRIM + 1}, "
                          f"music_trs >= 2 (got {cfg})")
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; set overwrite true to replace it")
    with atomic_dir(out) as tmp:
        _build(cfg, tmp)
    return out


@dataclass
class NarrSimulateConfig:
    """Generate a simulated Narratives-layout dataset."""

    out: str = "data/sim_narratives"
    """Output dataset root."""
    overwrite: bool = False
    """Replace an existing non-empty --out."""
    sim: NarrSimConfig = field(default_factory=NarrSimConfig)
    """What to simulate."""


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_cli(NarrSimulateConfig, argv)
        out = simulate_narratives(cfg.sim, cfg.out, cfg.overwrite)
    except (UserError, RuntimeError) as exc:
        print(f"simulate.narratives: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
