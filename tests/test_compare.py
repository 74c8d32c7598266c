"""The comparison job on a real local Ray (CPU): brain-tuned and shuffled-control fits, 2 replicate seeds each,
as concurrent Tune trials, then one alignment report (headline over seeds) and the low-level impact; resume."""
import mlflow
import numpy as np
import pytest

from braintune_dist.config import ConfigError, from_dict
from braintune_dist.errors import UserError
from braintune_dist.jobs.compare import CompareJobConfig, fit_of, run

from fits import tiny_job


def tiny_compare(tmp) -> CompareJobConfig:
    d = tiny_job(tmp, "compare-test")
    d["fit"]["target"] = {"chunk_trs": 4, "min_distance": 1}                       # 16-row stories: 4 chunks
    # 2 CPUs hold two fits: 2 × (0.25 trial + 0.25 Train worker) leave Ray Data's read tasks a whole CPU
    d["compare"] = {"seeds": [0, 1], "max_concurrent": 2, "storage_path": str(tmp / "tune"), "name": "cmp",
                    "lowlevel": {"enabled": True, "spaces": ["spectral"]}}
    # every compared model gets downstream probe rows (a tiny suite: 3 speakers, 2 command words, 1 layer)
    d["downstream"] = {"enabled": True, "features": {"layers": [1]}, "preference": {"enabled": False},
                       "suite": {"out": str(tmp / "suite"), "voices": ["en-us", "en-gb+f2", "en-us+m3"],
                                 "validation_speakers": 1, "test_speakers": 1, "speeds": [150, 190], "pitches": [50],
                                 "command_words": ["yes", "no"], "command_takes": 1, "phoneme_sentences": 2,
                                 "meaning_sentences": 8, "sentence_type_items": 1},
                       "probe": {"seeds": [0], "lrs": [0.01], "weight_decays": [0.0], "max_epochs": 5}}
    return from_dict(CompareJobConfig, d)


def test_models_differ_only_in_target_and_seed(tmp_path):
    cfg = tiny_compare(tmp_path)
    (la, a), (lb, b) = fit_of(cfg, cfg.fit, "brain", 0), fit_of(cfg, cfg.fit, "shuffled", 1)
    assert (la, lb) == ("brain-tuned-s0", "shuffled-tuned-s1")
    assert (a.target.kind, b.target.kind, a.train.seed, b.train.seed) == ("brain", "shuffled", 0, 1)
    assert b.target.chunk_trs == 4 and a.ray.run_name != b.ray.run_name
    assert (a.stream, a.model, a.optim, a.train.epochs) == (b.stream, b.model, b.optim, b.train.epochs)
    with pytest.raises(ConfigError, match=r"compare.seeds: \[1, 1\] repeats a seed"):
        from_dict(CompareJobConfig, {"compare": {"seeds": [1, 1]}})


@pytest.mark.slow
def test_comparison_runs_fits_concurrently_reports_over_seeds_and_resumes(ray_local, tmp_path):
    cfg = tiny_compare(tmp_path)
    with pytest.raises(UserError, match=r"compare.resume: nothing to restore at .*cmp"):
        run(from_dict(CompareJobConfig, {**_as_dict(cfg), "compare": {**_as_dict(cfg)["compare"], "resume": True}}))
    assert not (tmp_path / "sim").exists()                      # refused before any work
    lines = []
    out = run(cfg, log=lines.append)
    fits = {f["label"]: f for f in out["fits"]}
    assert sorted(fits) == ["brain-tuned-s0", "brain-tuned-s1", "shuffled-tuned-s0", "shuffled-tuned-s1"]
    spans = sorted((f["started"], f["finished"]) for f in fits.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans          # two fits ran at the same time
    # replicates differ from their first batch on
    assert fits["brain-tuned-s0"]["metrics"]["first_loss"] != fits["brain-tuned-s1"]["metrics"]["first_loss"]
    table = {(r["model"], r["region"]): r for r in out["summary"]}
    assert {m for m, _ in table} == {"untuned", "brain-tuned", "shuffled-tuned"}
    for group in ("brain-tuned", "shuffled-tuned"):
        r = table[(group, "all")]
        assert r["n_seeds"] == 2 and r["se_over"] == "seeds" and r["test"] == "t-test over seeds"
        assert np.isfinite(r["mean"]) and np.isfinite(r["diff"])
    assert (tmp_path / "reports" / "cmp" / "alignment_summary.png").stat().st_size > 10_000
    assert any(x.startswith("[alignment] headline") for x in lines)
    impact = {(r["model"], r["region"]): r for r in out["impact"]}
    # a random-init model this small predicts only the phonetic region (headline > 0 there, < 0 elsewhere, where
    # R is undefined); measured R ≈ 10 % for every model when the spectrum is removed
    assert 0 < impact[("untuned", "phonetic")]["R"] < 100 and impact[("brain-tuned", "phonetic")]["n_seeds"] == 2
    assert np.isfinite(impact[("brain-tuned", "phonetic")]["R_se"])
    probes = {(r["model"], r["task"]) for r in out["downstream"].summary}
    assert probes == {(m, t) for m in ("untuned", "brain-tuned", "shuffled-tuned")
                      for t in ("commands", "phonemes", "meaning", "sentence_type")}
    assert (tmp_path / "reports" / "cmp" / "downstream" / "downstream_summary.png").is_file()
    client = mlflow.tracking.MlflowClient(cfg.fit.tracking.uri)
    exp = client.get_experiment_by_name("compare-test")
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert sorted(k.data.tags["target"] for k in kids) == ["brain", "brain", "shuffled", "shuffled"]
    # resumed: no fit runs again, the same parent run gets the report again
    cfg.compare.resume = True
    cfg.downstream.enabled = False                              # its rows are checked above; the resume is the point
    again = run(cfg, log=lambda *_: None)
    assert again["run_id"] == out["run_id"]
    assert {f["label"]: f["started"] for f in again["fits"]} == {k: f["started"] for k, f in fits.items()}


def _as_dict(cfg):
    from braintune_dist.config import to_dict
    return to_dict(cfg)
