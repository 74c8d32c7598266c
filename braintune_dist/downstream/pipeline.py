"""The downstream report of several models: tasks → clip features (actor pool, cache) → probes (Ray tasks) →
tables, figures and MLflow; then the Whisper transcription check and the word-pair preference curve.

Used by ``jobs/downstream.py`` and, for every model it compares, by ``jobs/compare.py``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from braintune_dist.downstream.config import DownstreamSettings
from braintune_dist.downstream.tasks import Task
from braintune_dist.evaluate.featurize import ModelSpec
from braintune_dist.tracking import Tracker, publish


SOURCES = {"timit_phonemes": ("timit", dict(task="phonemes")),
           "timit_sentence_type": ("timit", dict(task="sentence_type")),
           "speech_commands": ("speech_commands", {}), "crema_d": ("crema_d", {}),
           "slurp_action": ("slurp", dict(label="action")), "slurp_intent": ("slurp", dict(label="intent"))}
"""``DatasetSource.kind`` → (reader, its options)."""


@dataclass
class DownstreamReport:
    """What one downstream report measured."""

    summary: list[dict]
    """Headline rows: (model group, task, metric) averaged over layers (``report.summary_table``)."""
    layers: list[dict]
    """Per (model, task, layer) rows."""
    naive: dict[str, dict]
    """task → the naive majority classifier's test scores."""
    asr: list[dict] = field(default_factory=list)
    """Transcription rows (1 − WER per model, Δ against untuned), Whisper only."""
    preference: list[dict] = field(default_factory=list)
    """Per (model, layer) semantic − phonetic distance with its CI."""


def load_tasks(ds: DownstreamSettings, log=print) -> list[Task]:
    """The synthetic suite's tasks (made once, reused) and every real dataset named, each checked."""
    from braintune_dist.downstream.readers import read_task
    from braintune_dist.downstream.synthetic import make_suite
    tasks: list[Task] = []
    if ds.synthetic:
        suite = make_suite(ds.suite)
        missing = sorted(set(ds.tasks) - set(suite))
        if missing:
            from braintune_dist.config import ConfigError
            raise ConfigError(f"downstream.tasks: {missing} are not synthetic tasks ({sorted(suite)})")
        tasks += [t for name, t in suite.items() if not ds.tasks or name in ds.tasks]
    for src in ds.datasets:          # named by kind: the real Speech Commands is not the synthetic 'commands'
        reader, options = SOURCES[src.kind]
        tasks.append(dataclasses.replace(read_task(reader, src.root, **options), name=src.kind))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        from braintune_dist.config import ConfigError
        raise ConfigError(f"downstream.datasets: a task is named twice ({names})")
    for t in tasks:
        log(f"[downstream] task {t.name}: {t.n_clips} clips, {len(t.classes)} classes"
            f"{' (multi-label)' if t.multi_label else ''}; train/validation/test "
            f"{'/'.join(str(len(t.indices(s))) for s in ('train', 'validation', 'test'))} from {t.source}")
    return tasks


def run_downstream(specs: list[ModelSpec], ds: DownstreamSettings, out: str | Path,
                   tracker: Tracker | None = None, log=print, tasks: list[Task] | None = None) -> DownstreamReport:
    """Probe every model on every task (``tasks``: :func:`load_tasks` of ``ds`` when not given); then
    transcription (Whisper) and word-pair preference if enabled."""
    from braintune_dist.downstream.features import clip_features
    from braintune_dist.downstream.metrics import levels
    from braintune_dist.downstream.probe import TaskArrays, run_probes
    from braintune_dist.downstream.report import format_summary, layer_table, plot_layers, plot_summary, summary_table
    out = Path(out)
    features = ds.features if ds.features.cache_dir else \
        dataclasses.replace(ds.features, cache_dir=str(out / "feature_cache"))
    tasks = load_tasks(ds, log) if tasks is None else tasks
    feats, layers = clip_features(tasks, specs, features, ds.compute, log)
    results = run_probes(feats, [TaskArrays.of(t) for t in tasks], layers, ds.probe, ds.compute, log)
    level = {t.name: levels(t) for t in tasks}
    naive = {name: lv["majority"] for name, lv in level.items()}
    per_layer, summary = layer_table(results), summary_table(results, naive)
    naive_rows = [dict(task=name, level=kind, **lv[kind]) for name, lv in level.items() for kind in ("majority", "chance")]
    publish(out, tracker, "downstream", {"downstream_summary.csv": summary, "downstream_layers.csv": per_layer,
                          "downstream_levels.csv": naive_rows},
           {"downstream_summary.png": plot_summary(summary, "f1_macro", "Downstream probes (test split, held-out "
                                                                          "speakers)"),
            "downstream_per_layer.png": plot_layers(per_layer)})
    if tracker:
        tracker.log_metrics({f"probe.{r['model']}.{r['task']}.{r['metric']}": r["mean"] for r in summary})
    for line in format_summary(summary):
        log(line)
    report = DownstreamReport(summary, per_layer, naive)
    if ds.asr.enabled:
        report.asr = asr_stage(specs, tasks, ds, out, tracker, log)
    if ds.preference.enabled:
        report.preference = preference_stage(specs, ds, features, out, tracker, log)
    log(f"[downstream] tables and figures in {out}")
    return report


def preference_stage(specs: list[ModelSpec], ds: DownstreamSettings, features, out: Path,
                     tracker: Tracker | None, log=print) -> list[dict]:
    """Semantic − phonetic distance per layer of every model on isolated words; groups of seeds averaged."""
    import numpy as np

    from braintune_dist.downstream.features import clip_features
    from braintune_dist.downstream.preference import compare_curves, group_curve, plot_preference, preference_curve
    from braintune_dist.downstream.wordpairs import build_pairs, synthesize_words
    from braintune_dist.evaluate.summary import group_of
    p = ds.preference
    pairs = build_pairs()
    clips = synthesize_words(list(pairs.words), tuple(p.voices), p.out)
    log(f"[downstream] word pairs: {len(pairs.targets)} targets ({len(pairs.dropped)} words without a phonetic "
        f"neighbour left out), {len(pairs.words)} words × {len(p.voices)} voices")
    feats, layers = clip_features([clips.task()], specs, features, ds.compute, log)
    curves = {label: preference_curve(f["word_pairs"], clips.word_index, pairs, n_boot=p.n_boot,
                                      clip_voice=np.asarray(clips.voices), layers=layers[label])
              for label, f in feats.items()}
    groups: dict[str, list[str]] = {}
    for label in curves:
        groups.setdefault(group_of(label), []).append(label)
    shown = {g: group_curve([curves[m] for m in ms], p.n_boot) for g, ms in groups.items()}
    rows = [dict(r, group=group_of(label)) for label, c in curves.items() for r in c.rows(label)]
    summary = []
    for g, ms in groups.items():                 # layer-averaged d: mean and SE over the group's seeds
        per_seed = np.array([curves[m].d.mean() for m in ms])
        lm = shown[g].per_target.mean(axis=1)
        summary.append(dict(model=g, n_seeds=len(ms), d_layer_mean=float(per_seed.mean()),
                            se_over_seeds=float(per_seed.std(ddof=1) / np.sqrt(len(ms))) if len(ms) > 1 else float("nan"),
                            n_targets=len(lm)))
    delta = compare_curves(shown, "untuned", p.n_boot).rows() if "untuned" in shown else []
    publish(out, tracker, "downstream", {"preference_layers.csv": rows, "preference_summary.csv": summary,
                          "preference_vs_untuned.csv": delta},
           {"preference_per_layer.png": plot_preference(shown, "Semantic − phonetic distance per layer (model groups: "
                                                               "words' d averaged over seeds)")})
    for r in summary:
        line = f"[downstream] preference {r['model']}: d {r['d_layer_mean']:+.4f} (layer mean"
        line += f", ± {r['se_over_seeds']:.4f} SE over {r['n_seeds']} seeds)" if r["n_seeds"] > 1 else ")"
        log(line)
    for r in (r for r in delta if r["layer"] == "mean"):
        log(f"[downstream] preference {r['model']} − untuned: Δd {r['delta']:+.4f} "
            f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] (95% paired bootstrap over words, layer mean)")
    return rows


def asr_stage(specs: list[ModelSpec], tasks: list[Task], ds: DownstreamSettings, out: Path,
              tracker: Tracker | None, log=print) -> list[dict]:
    """1 − WER of every Whisper model (its encoder under the original decoder) on held-out-speaker sentences."""
    from braintune_dist.config import ConfigError
    from braintune_dist.downstream.asr import asr_table, format_asr_table, run_asr
    whisper = [s for s in specs if s.model.family == "whisper"]
    if not whisper or "untuned" not in [s.label for s in whisper]:
        log("[downstream] transcription check skipped: it compares Whisper encoders with the untuned one")
        return []
    by_name = {t.name: t for t in tasks}
    if ds.asr.task not in by_name or not by_name[ds.asr.task].texts:
        raise ConfigError(f"downstream.asr.task: {ds.asr.task!r} is not a probed task with transcripts "
                          f"({[t.name for t in tasks if t.texts]})")
    task = by_name[ds.asr.task]
    test = task.indices("test")
    test = test[:ds.asr.max_clips] if ds.asr.max_clips else test
    log(f"[downstream] transcribing {len(test)} held-out-speaker sentences of {task.name} with {len(whisper)} "
        "Whisper encoders under the original decoder")
    results = run_asr(whisper, [task.files[i] for i in test], [task.texts[i] for i in test], ds.compute,
                      ds.asr.max_tokens)
    rows = asr_table(results)
    publish(out, tracker, "downstream", {"asr.csv": rows}, {})
    if tracker:
        tracker.log_metrics({f"asr.{r['model']}.accuracy": r["accuracy"] for r in rows if r["n_seeds"] == 1})
    for line in format_asr_table(rows).splitlines():
        log(f"[downstream] {line}")
    return rows
