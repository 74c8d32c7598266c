"""Does brain-tuning change what Whisper hears? The tuned encoder under the original decoder, word error rate.

A brain-tuned Whisper checkpoint holds only the encoder (LoRA merged in). :func:`whisper_with_encoder` puts it
under the untouched decoder of the pretrained model it was tuned from, :func:`transcribe` decodes clips
greedily (:func:`braintune_dist.model.ct2.greedy_transcribe`) and scores them against their
transcripts, and :func:`asr_table` compares models with a paired bootstrap over sentences. Torch-free at module
level.

WER normalisation: lowercase, apostrophes dropped ("don't" → "dont"), other punctuation and symbols turned
into spaces, whitespace collapsed. Numbers are not spelled out: "3" against "three" counts as an error, so
references should be written the way Whisper writes them (the espeak-ng sentences have no digits).
"""
from __future__ import annotations

import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.errors import DatasetError, UserError
from braintune_dist.evaluate.compute import ComputeSettings, Runner, use_ray
from braintune_dist.evaluate.featurize import ModelSpec
from braintune_dist.evaluate.summary import group_of

MAX_SECONDS = 30.0
"""Whisper's fixed input: longer clips would be cut silently by the feature extractor, so they are refused."""


def normalize(text: str) -> list[str]:
    """Words of ``text`` after the WER normalisation (see the module docstring)."""
    out = []
    for c in unicodedata.normalize("NFKC", text.lower()):
        if c in "'’":
            continue
        out.append(" " if unicodedata.category(c)[0] in "PS" else c)
    return "".join(out).split()


def wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words): Levenshtein distance over normalised words (substitution, insertion and
    deletion cost 1 each) and the length of the normalised reference."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    prev = list(range(len(hyp) + 1))                 # distance of ref[:0] to each prefix of hyp
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1], len(ref)


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    """Total word edits over total reference words (a long sentence weighs more than a short one, unlike a
    mean of per-sentence WERs)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    counts = [wer(r, h) for r, h in zip(refs, hyps)]
    edits, words = sum(e for e, _ in counts), sum(n for _, n in counts)
    if words == 0:
        raise UserError("corpus WER: the references hold no words")
    return edits / words


def _same_weights(a: Path, b: Path) -> bool:
    """Two pretrained folders hold the same weights (the same folder, or byte-identical weight files)."""
    from braintune_dist.io import sha256_file
    if a.resolve() == b.resolve():
        return True
    wa, wb = sorted(a.glob("*.safetensors")), sorted(b.glob("*.safetensors"))
    return bool(wa) and [p.name for p in wa] == [p.name for p in wb] and all(
        sha256_file(x) == sha256_file(y) for x, y in zip(wa, wb))


def pretrained_folder(spec: ModelSpec) -> Path:
    """The HF Whisper folder whose decoder transcribes for ``spec``: ``spec.model.pretrained``, or for a
    checkpoint the base it was tuned from; refuses a non-Whisper model or a base other than that folder."""
    from braintune_dist.train.checkpoint import read_meta
    family, folder, where = spec.model.family, spec.model.pretrained, f"model {spec.label!r}"
    if spec.checkpoint:
        cfg = read_meta(spec.checkpoint)["config"].get("model", {})
        family, base, where = cfg.get("family", "wav2vec2"), cfg.get("pretrained", ""), f"checkpoint {spec.checkpoint}"
        if family == "whisper" and not base:
            raise UserError(f"{where}: tuned from a random init; no Whisper decoder ever read its encoder")
        if family == "whisper" and folder and not _same_weights(Path(folder), Path(base)):
            raise UserError(f"{where}: tuned from {base}, not from model.pretrained {folder}; its encoder would run "
                            "under another model's decoder")
        folder = folder or base
    if family != "whisper":
        raise UserError(f"{where}: a {family} model (model.family); transcription needs a Whisper encoder")
    if not folder or not Path(folder).is_dir():
        raise UserError(f"{where}: model.pretrained {folder or '(random init)'} is not a pretrained Whisper folder; "
                        "transcription needs its trained decoder")
    return Path(folder)


def whisper_with_encoder(spec: ModelSpec):
    """The original full Whisper of ``spec``'s pretrained folder with its encoder replaced by ``spec``'s.

    The decoder (and its cross-attention) is the pretrained one, unchanged; the encoder is ``spec.load()``'s:
    unchanged for an untuned spec, the tuned one with LoRA merged for a checkpoint. Every encoder tensor must be
    replaced by one of the same name and shape, else a ``UserError`` names the checkpoint (another Whisper
    size, a wav2vec2 checkpoint).

    The brain-tuning backbone may run the encoder on unpadded log-mel (``whisper_input: native``), but the
    decoder learnt to read the encoder of the 30 s zero-padded input: transcription always feeds the original
    padded log-mel, whichever input the encoder was tuned on.

    Returns
    -------
    WhisperForConditionalGeneration, in eval mode, float32, on CPU.
    """
    return _assemble(spec)[0]


def _assemble(spec: ModelSpec):
    """(:func:`whisper_with_encoder`'s model, its pretrained folder)."""
    from transformers import WhisperForConditionalGeneration
    folder = pretrained_folder(spec)
    try:
        full = WhisperForConditionalGeneration.from_pretrained(folder).float()
    except (OSError, ValueError) as exc:
        raise UserError(f"model {spec.label!r}: {folder} is not a Whisper model folder ({exc})") from None
    where = f"checkpoint {spec.checkpoint}" if spec.checkpoint else f"model {spec.label!r}"
    tuned = spec.load().model.state_dict()
    want = full.model.encoder.state_dict()
    odd = sorted(set(tuned) ^ set(want)) + sorted(k for k in set(tuned) & set(want) if tuned[k].shape != want[k].shape)
    if odd:
        raise UserError(f"{where}: its encoder does not fit the Whisper of {folder} ({len(odd)} tensors differ in "
                        f"name or shape, e.g. {odd[0]}): another model size or family?")
    full.model.encoder.load_state_dict({k: t.float() for k, t in tuned.items()}, strict=True)
    return full.eval(), folder


@dataclass(frozen=True)
class AsrResult:
    """One model's transcripts of a set of clips and their word error rate."""

    label: str
    """Model name (the spec's label)."""
    hypotheses: tuple[str, ...]
    """Decoded transcript of each clip (n_clips,)."""
    edits: tuple[int, ...]
    """Word edits of each clip against its reference (n_clips,)."""
    words: tuple[int, ...]
    """Normalised reference words of each clip (n_clips,)."""
    wer: float
    """Corpus WER: sum(edits) / sum(words)."""
    accuracy: float
    """1 − WER (negative when the hypotheses insert more words than the references hold)."""
    n_words: int
    """Reference words in all."""
    seconds: float
    """Wall time of the transcription (audio reading and decoding; model loading excluded)."""


def transcribe(spec: ModelSpec, files: list[str], texts: list[str], max_tokens: int = 96) -> AsrResult:
    """Transcribe ``files`` (16 kHz after :func:`load_clip`, ≤ 30 s each) with ``spec``'s encoder under the
    original decoder, greedy decoding of at most ``max_tokens`` tokens per clip, scored against ``texts``."""
    from transformers import WhisperTokenizerFast
    from braintune_dist.downstream.tasks import load_clip
    from braintune_dist.model.ct2 import greedy_transcribe
    if len(files) != len(texts):
        raise UserError(f"transcribe: {len(files)} clips but {len(texts)} transcripts")
    if not files:
        raise UserError("transcribe: no clips")
    model, folder = _assemble(spec)
    try:
        tok = WhisperTokenizerFast.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"model.pretrained: {folder} has no Whisper tokenizer ({exc})") from None
    t0, hyps, edits, words = time.time(), [], [], []
    for f, ref in zip(files, texts):
        audio = load_clip(f)
        if audio.size > MAX_SECONDS * 16_000:
            raise DatasetError(f"{f}: {audio.size / 16_000:.1f} s; Whisper transcribes at most {MAX_SECONDS:.0f} s")
        hyp = tok.decode(greedy_transcribe(model, audio, max_tokens), skip_special_tokens=True).strip()
        e, n = wer(ref, hyp)
        if n == 0:
            raise DatasetError(f"{f}: its transcript {ref!r} has no words")
        hyps.append(hyp)
        edits.append(e)
        words.append(n)
    rate = sum(edits) / sum(words)
    return AsrResult(spec.label, tuple(hyps), tuple(edits), tuple(words), rate, 1.0 - rate, sum(words),
                     time.time() - t0)


def run_asr(specs: list[ModelSpec], files: list[str], texts: list[str], compute: ComputeSettings,
            max_tokens: int = 96) -> list[AsrResult]:
    """:func:`transcribe` for every model: one Ray task each when the evaluation runs on Ray (``compute``;
    the files and checkpoints must then be readable where the tasks run), else one after another here."""
    runner = Runner(use_ray(compute), num_cpus=max(1.0, compute.feature_cpus))
    return runner.gather([runner.submit(transcribe, s, list(files), list(texts), max_tokens) for s in specs])


def asr_table(results: list[AsrResult], reference_label: str = "untuned", n_boot: int = 2000,
              seed: int = 0) -> list[dict]:
    """One row per model, then one per seed group (labels ``<group>-s<seed>``, two seeds or more).

    Row keys: ``model``, ``n_seeds``, ``accuracy`` (1 − WER; a group's mean over seeds), ``se`` (standard error
    over seeds; NaN for one model), ``delta`` (accuracy minus the reference's), ``ci_low``/``ci_high`` (95%
    paired bootstrap interval of ``delta``: sentences resampled with replacement, the same draw for every model,
    corpus WER recomputed; NaN on the reference row), ``n_sentences``, ``n_words``. An interval that excludes 0
    is a change beyond what the choice of sentences explains (seeds are not resampled: ``se`` shows them).
    """
    by_label = {r.label: r for r in results}
    if reference_label not in by_label:
        raise UserError(f"asr_table: no model labelled {reference_label!r} among {sorted(by_label)}")
    ref = by_label[reference_label]
    for r in results:
        if r.words != ref.words:
            raise UserError(f"asr_table: model {r.label!r} was scored on other sentences than {reference_label!r}")
    E = np.array([r.edits for r in results], dtype=float)           # (n_models, n_sentences)
    N = np.asarray(ref.words, dtype=float)                          # (n_sentences,)
    n = N.size
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    W = np.zeros((n_boot, n))
    np.add.at(W, (np.arange(n_boot)[:, None], draws), 1.0)          # (n_boot, n_sentences) counts
    acc_boot = 1.0 - (W @ E.T) / (W @ N)[:, None]                   # (n_boot, n_models)
    i_ref = list(by_label).index(reference_label)
    d_boot = acc_boot - acc_boot[:, [i_ref]]
    acc = np.array([r.accuracy for r in results])
    rows = []

    def row(model: str, idx: list[int]) -> dict:
        is_ref = idx == [i_ref]
        lo, hi = (np.nan, np.nan) if is_ref else np.percentile(d_boot[:, idx].mean(axis=1), [2.5, 97.5])
        a = acc[idx]
        se = float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")
        return dict(model=model, n_seeds=len(idx), accuracy=float(a.mean()), se=se,
                    delta=float(a.mean() - acc[i_ref]), ci_low=float(lo), ci_high=float(hi), n_sentences=n,
                    n_words=int(N.sum()))

    groups = defaultdict(list)
    for i, r in enumerate(results):
        rows.append(row(r.label, [i]))
        if group_of(r.label) != r.label:
            groups[group_of(r.label)].append(i)
    rows += [row(f"{g} (mean of {len(idx)} seeds)", idx) for g, idx in groups.items() if len(idx) > 1]
    return rows


def format_asr_table(rows: list[dict]) -> str:
    """The rows of :func:`asr_table` as aligned text, one model a line."""
    lines = [f"{'model':<32} {'1-WER':>7} {'±SE':>6} {'Δ':>7}  {'95% CI of Δ':<17} sentences words"]
    for r in rows:
        se = "" if np.isnan(r["se"]) else f"{r['se']:.3f}"
        ci = "" if np.isnan(r["ci_low"]) else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        lines.append(f"{r['model']:<32} {r['accuracy']:>7.3f} {se:>6} {r['delta']:>+7.3f}  {ci:<17} "
                     f"{r['n_sentences']:>9} {r['n_words']:>5}")
    return "\n".join(lines)
